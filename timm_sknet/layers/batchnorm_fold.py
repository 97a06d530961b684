"""BatchNorm folding algebra: an inference-mode BatchNorm after a convolution is an affine map per output
channel, so it can be merged into the convolution's weight and bias.

``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) + beta``, computed in float64 and
rounded once to the convolution's dtype. Nothing here knows about SK units or blocks; the layers that own a
conv-BN pair call :func:`fold_batchnorm` on their own parts.
"""
import copy
from typing import List

import torch
from torch import nn

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


def bn_act_parts(bn: nn.Module) -> List[nn.Module]:
    """The modules a (frozen) ``BatchNormAct2d`` applies after normalising: its drop, then its act."""
    parts = (getattr(bn, 'drop', None), getattr(bn, 'act', None))
    return [m for m in parts if m is not None and not isinstance(m, nn.Identity)]


def fold_batchnorm(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """A copy of ``conv`` (same class and settings) with ``bn``'s inference affine folded into it.

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
    dd = dict(device=conv.weight.device, dtype=torch.float64)
    w = conv.weight.detach().to(**dd)
    b = conv.bias.detach().to(**dd) if conv.bias is not None else torch.zeros(conv.out_channels, **dd)
    gamma = bn.weight.detach().to(**dd) if getattr(bn, 'weight', None) is not None else torch.ones_like(b)
    beta = bn.bias.detach().to(**dd) if getattr(bn, 'bias', None) is not None else torch.zeros_like(b)
    scale = gamma / torch.sqrt(var.detach().to(**dd) + bn.eps)
    fused = copy.deepcopy(conv)
    trainable = conv.weight.requires_grad
    folded_w = (w * scale.reshape(-1, *([1] * (w.ndim - 1)))).to(conv.weight.dtype).contiguous()
    folded_b = ((b - mean.detach().to(**dd)) * scale + beta).to(conv.weight.dtype)
    fused.weight = nn.Parameter(folded_w, requires_grad=trainable)
    fused.bias = nn.Parameter(folded_b, requires_grad=trainable)
    return fused
