"""Training checkpoints: a Hub-format model folder plus the state needed to resume.

A checkpoint folder is what ``timm.create_model('local-dir:<folder>', pretrained=True)`` loads
(``config.json`` + ``model.safetensors``), with ``training_state.pt`` beside it holding what resuming needs
(optimizer, scheduler, EMA, grad scaler, epoch, step). The state file holds only tensors and plain
Python values, so it loads with ``torch.load(weights_only=True)``: opening a checkpoint never runs code.

Folders are written next to their destination and renamed into place, so a crash mid-write leaves the
previous checkpoint, never a half-written one under the final name.
"""
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from timm.models._hub import save_config_for_hf  # what timm.models.save_for_hf writes config.json with

from .file_io import atomic_folder

__all__ = ['TRAINING_STATE_FILE', 'write_model_folder', 'save_checkpoint', 'load_checkpoint', 'resolve_resume_path']

TRAINING_STATE_FILE = 'training_state.pt'
WEIGHTS_FILE = 'model.safetensors'


def write_model_folder(
        model: nn.Module,
        folder: Union[str, Path],
        label_names: Optional[Sequence[str]] = None,
) -> Path:
    """Write ``model`` into an existing ``folder`` in the Hub layout (config.json + model.safetensors).

    This is the single place the training code writes Hub folders; the package's Hub writer can
    replace the body without touching callers. ``model.pretrained_cfg`` supplies the preprocessing
    (input size, mean, std, crop) recorded in config.json.

    timm's ``save_for_hf`` writes the config; the weights are written here because safetensors refuses
    non-contiguous tensors, which is what a ``channels_last`` model's conv weights are.
    """
    folder = Path(folder)
    model_config = {'label_names': list(label_names)} if label_names else None
    save_config_for_hf(model, str(folder / 'config.json'), model_config=model_config)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    return folder


def save_checkpoint(
        dest: Union[str, Path],
        model: nn.Module,
        training_state: Optional[Dict[str, Any]] = None,
        label_names: Optional[Sequence[str]] = None,
) -> Path:
    """Atomically write a checkpoint folder: the model in Hub layout, plus ``training_state`` if given."""
    with atomic_folder(dest) as tmp:
        write_model_folder(model, tmp, label_names)
        if training_state is not None:
            torch.save(training_state, tmp / TRAINING_STATE_FILE)
    return Path(dest)


def read_config(folder: Union[str, Path]) -> Dict[str, Any]:
    with open(Path(folder) / 'config.json') as f:
        return json.load(f)


def load_checkpoint(folder: Union[str, Path], model: nn.Module) -> Dict[str, Any]:
    """Load a checkpoint's weights into ``model`` (strictly) and return its training state.

    Raises:
        FileNotFoundError: ``folder`` is not a checkpoint written by ``save_checkpoint`` with state.
        ValueError: the checkpoint was made for a different architecture or number of classes.
    """
    folder = Path(folder)
    missing = [n for n in ('config.json', WEIGHTS_FILE, TRAINING_STATE_FILE) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f'{folder} is not a resumable checkpoint (missing {", ".join(missing)}). Pass the '
            f'"checkpoint" folder inside a training output folder, or the output folder itself.')
    config = read_config(folder)
    arch = model.pretrained_cfg.get('architecture')
    if config.get('architecture') != arch:
        raise ValueError(
            f'checkpoint {folder} is for architecture {config.get("architecture")!r}, but the model being '
            f'trained is {arch!r}; resume with --model {config.get("architecture")}')
    state_dict = load_file(str(folder / WEIGHTS_FILE))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f'checkpoint {folder} does not fit the model being trained (different model kwargs or '
            f'num_classes?): {e}') from None
    return torch.load(folder / TRAINING_STATE_FILE, map_location='cpu', weights_only=True)


def resolve_resume_path(path: Union[str, Path]) -> Path:
    """Accept either a checkpoint folder or a training output folder containing ``checkpoint/``."""
    path = Path(path)
    if (path / TRAINING_STATE_FILE).is_file():
        return path
    if (path / 'checkpoint' / TRAINING_STATE_FILE).is_file():
        return path / 'checkpoint'
    raise FileNotFoundError(
        f'no checkpoint to resume at {path}: expected {path / TRAINING_STATE_FILE} or '
        f'{path / "checkpoint" / TRAINING_STATE_FILE} (written by timm-sknet train after each epoch)')
