"""The small SKNet that ships inside the package, trained on the synthetic shapes (``sknet_tiny.synthetic``).

It lets the main job run on a machine with no network: the weights folder is package data. It is itself a
Hub-format folder (``config.json`` + ``model.safetensors``), so
``timm.create_model('local-dir:<WEIGHTS_DIR>', pretrained=True)`` loads it as well as the registered tag.
Reproduce it with ``scripts/train_embedded_model.sh`` (recipe and metrics: weights_card.md).
"""
from pathlib import Path

from ..errors import WeightsError
from ..file_io import sha256_file

__all__ = ['EMBEDDED_CLASSES', 'EMBEDDED_TAG', 'WEIGHTS_DIR', 'WEIGHTS_FILE', 'WEIGHTS_SHA256', 'verify_embedded_weights']

EMBEDDED_TAG = 'sknet_tiny.synthetic'
#: Its classes: the first six shapes of ``timm_sknet.data.synthetic.CLASSES`` (``--synthetic-classes 6``),
#: written out here so that registering the model needs no image code (a test checks they agree).
EMBEDDED_CLASSES = ('disk', 'square', 'triangle', 'cross', 'star', 'ring')
WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights' / EMBEDDED_TAG
WEIGHTS_FILE = WEIGHTS_DIR / 'model.safetensors'
#: sha256 of WEIGHTS_FILE as published; checked before the weights are used.
WEIGHTS_SHA256 = '93bf7533d6febeb172cd7e6926acdc555145daae55e82b3b828f6d1164529be1'


def verify_embedded_weights() -> Path:
    """Return the path of the embedded weights after checking that they are present and intact.

    Raises:
        WeightsError: the file is missing (a broken install) or its sha256 differs (a corrupted or
            locally modified install).
    """
    if not WEIGHTS_FILE.is_file():
        raise WeightsError(
            f'The embedded weights {WEIGHTS_FILE} are missing: this install of timm-sknet is incomplete. '
            f'Reinstall the package, or rebuild them with scripts/train_embedded_model.sh.')
    digest = sha256_file(WEIGHTS_FILE)
    if digest != WEIGHTS_SHA256:
        raise WeightsError(
            f'The embedded weights {WEIGHTS_FILE} have sha256 {digest}, expected {WEIGHTS_SHA256}: the file is '
            f'corrupted or was changed. Reinstall the package (or, after retraining on purpose, update '
            f'WEIGHTS_SHA256 in timm_sknet/hub/embedded.py).')
    return WEIGHTS_FILE
