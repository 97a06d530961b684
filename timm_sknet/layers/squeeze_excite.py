"""Squeeze-and-Excitation (Hu et al., CVPR 2018) with the ``SEModule(in_channels, reduction)`` API users expect.

This is timm's ``SEModule`` (so SE weights and timm's ``attn_layer`` machinery work unchanged) behind the
seed API: ``reduction`` is an integer ratio, and the hidden width is ``in_channels / reduction`` rounded to
the nearest integer (timm's ``make_divisible`` with divisor 1: halves round up, and the result is never more
than 10 % below the ratio), with no rounding to a multiple of 8, as in the SE paper. Pass ``attn_layer=SEModule`` (or ``'se'``) to
an SK block or ``SKNet`` to add SE after the block's last conv, as SENet does.
"""
from typing import Optional, Type, Union

import torch
from torch import nn

from timm.layers import SEModule as _TimmSEModule

__all__ = ['SEModule']


class SEModule(_TimmSEModule):
    """Global average pool -> FC (C -> C/r) -> ReLU -> FC (C/r -> C) -> sigmoid -> rescale the input."""

    def __init__(
            self,
            in_channels: int,
            reduction: int = 16,
            act_layer: Type[nn.Module] = nn.ReLU,
            device: Optional[Union[str, torch.device]] = None,
            dtype: Optional[torch.dtype] = None,
    ):
        if not isinstance(in_channels, int) or in_channels <= 0:
            raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')
        if not reduction > 0:
            raise ValueError(f'reduction must be > 0, got {reduction!r}')
        super().__init__(
            in_channels, rd_ratio=1.0 / reduction, rd_divisor=1, act_layer=act_layer, device=device, dtype=dtype)
        self.in_channels = in_channels
        self.reduction = reduction
