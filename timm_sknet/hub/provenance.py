"""What a model's weights are, as far as the package knows it: the provenance a model card may state.

A model's ``pretrained_cfg`` names the tag it was *created* with, whatever its weights are:
``timm.create_model('sknet18')`` carries the ``ra_in1k`` cfg with random weights, and a model loaded from a
file keeps its architecture's default tag. So the cfg cannot say what the weights are. When
``timm.create_model(..., pretrained=True)`` loads a tag's own weights (its Hub repository or the file embedded in
the package, not a file or folder the user passed), the model is stamped with the tag and a digest of its
tensors (:func:`stamp_loaded_weights`). :func:`weights_provenance` trusts the stamp only while the tensors are
still those: a model that was re-headed, trained or edited since keeps only "started from".
"""
import hashlib
from typing import NamedTuple, Optional

import torch
from torch import nn

__all__ = ['Provenance', 'stamp_loaded_weights', 'tensor_digest', 'weights_provenance']

_STAMP = '_timm_sknet_loaded_weights'


class Provenance(NamedTuple):
    """``tag``: the pretrained tag whose weights the model holds, unchanged; ``started_from``: the tag loaded
    before the model was re-headed, adapted or changed (``None``: the package loaded no tag's weights into it)."""
    tag: Optional[str]
    started_from: Optional[str]


class _Stamp(NamedTuple):
    tag: str
    exact: bool  # the whole state dict is the tag's: its classifier and first convolution were not adapted
    digest: str


def tensor_digest(model: nn.Module) -> str:
    """sha256 of the names, dtypes, shapes and bytes of ``model``'s state dict: equal only for equal tensors."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        digest.update(f'{name}:{t.dtype}:{tuple(t.shape)};'.encode())
        digest.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def stamp_loaded_weights(model: nn.Module, tag: str, exact: bool) -> None:
    """Record that ``model`` now holds the weights of pretrained ``tag`` (``exact``: all of them, unadapted)."""
    setattr(model, _STAMP, _Stamp(tag, exact, tensor_digest(model)))


def weights_provenance(model: nn.Module) -> Provenance:
    """Which pretrained tag's weights ``model`` holds, known only from a stamp whose tensors are unchanged."""
    stamp = getattr(model, _STAMP, None)
    if not isinstance(stamp, _Stamp):
        return Provenance(None, None)
    if stamp.exact and tensor_digest(model) == stamp.digest:
        return Provenance(stamp.tag, stamp.tag)
    return Provenance(None, stamp.tag)
