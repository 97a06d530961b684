"""BatchNorm folding: an inference-mode BatchNorm after a convolution is an affine map per output channel, so it
can be merged into the convolution's weight and bias.

The algebra is torch's own (``torch.nn.utils.fusion.fuse_conv_bn_weights``), run in float64 and rounded once
to the convolution's dtype. Nothing here knows about SK units or blocks; the layers that own a conv-BN pair fold
their own parts.
"""
import copy
from typing import List, Optional

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ['bn_act_parts', 'fold_batchnorm', 'is_batchnorm', 'unfused_batchnorms']


def is_batchnorm(module: nn.Module) -> bool:
    """True for modules that apply per-channel running statistics: torch/timm BN and frozen BN."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return True
    has_stats = all(hasattr(module, a) for a in ('running_mean', 'running_var', 'eps'))
    return has_stats and 'BatchNorm' in type(module).__name__


def unfused_batchnorms(model: nn.Module) -> List[str]:
    """Names of the BatchNorm modules still present in ``model`` (empty once it is fully fused)."""
    return [name for name, m in model.named_modules() if is_batchnorm(m)]


def bn_act_parts(bn: nn.Module) -> nn.Module:
    """What a (frozen) ``BatchNormAct2d`` applies after normalising, its drop then its act, as one module."""
    parts = [m for m in (getattr(bn, 'drop', None), getattr(bn, 'act', None))
             if m is not None and not isinstance(m, nn.Identity)]
    return nn.Sequential(*parts) if parts else nn.Identity()


def fold_batchnorm(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """A copy of ``conv`` (same class and settings, now with a bias) with ``bn``'s inference affine folded in.

    Works for ``nn.BatchNorm2d`` and subclasses (timm's ``BatchNormAct2d``: only the normalisation is
    folded, its drop/act are not) and for frozen BN (torchvision/timm ``FrozenBatchNorm2d``).

    Raises:
        ValueError: ``bn`` keeps no running statistics (it normalises with batch statistics at inference
            too, which no convolution can reproduce), or the channel counts disagree.
    """
    mean, var = getattr(bn, 'running_mean', None), getattr(bn, 'running_var', None)
    if mean is None or var is None:
        raise ValueError(
            f'cannot fold {type(bn).__name__} into a convolution: it has no running statistics '
            f'(track_running_stats=False normalises with batch statistics even in eval mode)')
    if mean.numel() != conv.out_channels:
        raise ValueError(
            f'cannot fold {type(bn).__name__}({mean.numel()}) into a conv with {conv.out_channels} outputs')

    def f64(t: torch.Tensor) -> torch.Tensor:
        return t.detach().double()

    def optional_f64(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if t is None else f64(t)
    weight, bias = fuse_conv_bn_weights(f64(conv.weight), optional_f64(conv.bias), f64(mean), f64(var),
                                        float(getattr(bn, 'eps')), optional_f64(getattr(bn, 'weight', None)),
                                        optional_f64(getattr(bn, 'bias', None)))
    fused = copy.deepcopy(conv)
    trainable = conv.weight.requires_grad
    fused.weight = nn.Parameter(weight.to(conv.weight.dtype).contiguous(), requires_grad=trainable)
    fused.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=trainable)
    return fused
