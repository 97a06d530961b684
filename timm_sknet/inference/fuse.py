"""One call to fold every BatchNorm of a model for inference, through timm's own walk.

``timm.utils.reparameterize_model`` calls ``fuse()`` / ``reparameterize()`` on the *children* of the module
it is given, never on that module itself. Every part of an SKNet folds itself when reached; the stem
belongs to the root model (``SKNet.reparameterize()``), so :func:`fuse_model` hands timm's walk a one-element
holder whose child is the model. Nothing is special-cased: the same walk reaches an SKNet inside transformers'
``TimmWrapper`` or a user's ``nn.Sequential``.
"""
from torch import nn

from timm.utils import reparameterize_model

__all__ = ['fuse_model']


def fuse_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` with every BatchNorm folded into its convolution, for inference.

    Args:
        model: an SKNet (or any timm model; parts without a fused form are left as they are).
        inplace: fold ``model`` itself; by default a deep copy is folded and ``model`` is untouched.
    """
    holder = nn.ModuleList([model])
    fused: nn.Module = reparameterize_model(holder, inplace=inplace)
    return fused[0]  # type: ignore[index]  # timm annotates the ModuleList it gets back as nn.Module
