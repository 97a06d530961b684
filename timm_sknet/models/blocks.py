"""Residual blocks with a Selective Kernel unit, following timm's ResNet block protocol.

``timm.models.resnet.ResNet`` builds its stages by calling ``block(inplanes, planes, stride, downsample,
cardinality=, base_width=, reduce_first=, dilation=, first_dilation=, act_layer=, norm_layer=,
attn_layer=, aa_layer=, drop_block=, drop_path=, device=, dtype=, **block_args)`` and reads
``block.expansion`` and ``block.zero_init_last()``. These blocks honour all of it, so output_stride
(dilation), anti-aliasing, DropBlock, stochastic depth and SE/other attention come from timm.

Submodule names equal timm's ``SelectiveKernelBasic`` / ``SelectiveKernelBottleneck`` so that timm's
skresnet18/34 and skresnext50_32x4d checkpoints load as they are.

Inference fusion (``timm.utils.reparameterize_model``) reaches every part on its own: the convs and the SK
unit fold themselves, and a block folds only its downsample shortcut, a plain ``nn.Sequential`` of timm's.
``forward`` is plain tensor code; speed is left to compilers and runtimes (:mod:`timm_sknet.inference`).
"""
import math
from typing import Any, Dict, Optional, Type, Union

import torch
from torch import nn

from timm.layers import create_attn

from ..layers import FusableConvNormAct, SelectiveKernel, fold_sequential

__all__ = ['SKBasicBlock', 'SKBottleneck']


class _SKResidual(nn.Module):
    """Shared tail of both blocks: optional attention and drop path, shortcut, add, activation (as timm's)."""
    expansion = 1

    def _init_tail(
            self,
            outplanes: int,
            act_layer: Type[nn.Module],
            attn_layer: Optional[Type[nn.Module]],
            downsample: Optional[nn.Module],
            drop_path: Optional[nn.Module],
            dd: Dict[str, Any],
    ) -> None:
        self.se = create_attn(attn_layer, outplanes, **dd)
        self.act = act_layer(inplace=True)
        self.downsample = downsample
        self.drop_path = drop_path

    def _finish(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        x += shortcut
        return self.act(x)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)

    def reparameterize(self) -> None:
        """Fold the block's own conv-BN shortcut (``timm.utils.reparameterize_model`` calls this).

        The block's other parts (its convs, its SK unit) are folded by the same walk, by themselves.
        """
        if isinstance(self.downsample, nn.Sequential):
            self.downsample = fold_sequential(self.downsample)


class SKBasicBlock(_SKResidual):
    """ResNet basic block (expansion 1) whose first 3x3 conv is an SK unit (SK-ResNet-18/34)."""
    expansion = 1

    def __init__(
            self,
            inplanes: int,
            planes: int,
            stride: int = 1,
            downsample: Optional[nn.Module] = None,
            cardinality: int = 1,
            base_width: int = 64,
            sk_kwargs: Optional[Dict[str, Any]] = None,
            reduce_first: int = 1,
            dilation: int = 1,
            first_dilation: Optional[int] = None,
            act_layer: Type[nn.Module] = nn.ReLU,
            norm_layer: Type[nn.Module] = nn.BatchNorm2d,
            attn_layer: Optional[Type[nn.Module]] = None,
            aa_layer: Optional[Type[nn.Module]] = None,
            drop_block: Optional[Type[nn.Module]] = None,
            drop_path: Optional[nn.Module] = None,
            device: Optional[Union[str, torch.device]] = None,
            dtype: Optional[torch.dtype] = None,
    ):
        dd: Dict[str, Any] = {'device': device, 'dtype': dtype}
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError(
                f'SKBasicBlock supports cardinality=1 and base_width=64 only, got {cardinality} and {base_width}; '
                f'use SKBottleneck for grouped (ResNeXt) widths')
        first_planes = planes // reduce_first
        outplanes = planes * self.expansion
        self.conv1 = SelectiveKernel(
            inplanes, first_planes, stride=stride, dilation=first_dilation or dilation,
            act_layer=act_layer, norm_layer=norm_layer, aa_layer=aa_layer, drop_layer=drop_block,
            **(sk_kwargs or {}), **dd)
        self.conv2 = FusableConvNormAct(
            first_planes, outplanes, kernel_size=3, dilation=dilation, apply_act=False,
            act_layer=act_layer, norm_layer=norm_layer, **dd)
        self._init_tail(outplanes, act_layer, attn_layer, downsample, drop_path, dd)

    def zero_init_last(self) -> None:
        if getattr(self.conv2.bn, 'weight', None) is not None:
            nn.init.zeros_(self.conv2.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self.conv2(self.conv1(x)), self._shortcut(x))


class SKBottleneck(_SKResidual):
    """ResNet(Xt) bottleneck (expansion 4) whose grouped 3x3 conv is an SK unit (the paper's SKNet-50/101)."""
    expansion = 4

    def __init__(
            self,
            inplanes: int,
            planes: int,
            stride: int = 1,
            downsample: Optional[nn.Module] = None,
            cardinality: int = 1,
            base_width: int = 64,
            sk_kwargs: Optional[Dict[str, Any]] = None,
            reduce_first: int = 1,
            dilation: int = 1,
            first_dilation: Optional[int] = None,
            act_layer: Type[nn.Module] = nn.ReLU,
            norm_layer: Type[nn.Module] = nn.BatchNorm2d,
            attn_layer: Optional[Type[nn.Module]] = None,
            aa_layer: Optional[Type[nn.Module]] = None,
            drop_block: Optional[Type[nn.Module]] = None,
            drop_path: Optional[nn.Module] = None,
            device: Optional[Union[str, torch.device]] = None,
            dtype: Optional[torch.dtype] = None,
    ):
        dd: Dict[str, Any] = {'device': device, 'dtype': dtype}
        super().__init__()
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        first_planes = width // reduce_first
        outplanes = planes * self.expansion
        self.conv1 = FusableConvNormAct(
            inplanes, first_planes, kernel_size=1, act_layer=act_layer, norm_layer=norm_layer, **dd)
        self.conv2 = SelectiveKernel(
            first_planes, width, stride=stride, dilation=first_dilation or dilation, groups=cardinality,
            act_layer=act_layer, norm_layer=norm_layer, aa_layer=aa_layer, drop_layer=drop_block,
            **(sk_kwargs or {}), **dd)
        self.conv3 = FusableConvNormAct(
            width, outplanes, kernel_size=1, apply_act=False, act_layer=act_layer, norm_layer=norm_layer, **dd)
        self._init_tail(outplanes, act_layer, attn_layer, downsample, drop_path, dd)

    def zero_init_last(self) -> None:
        if getattr(self.conv3.bn, 'weight', None) is not None:
            nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self.conv3(self.conv2(self.conv1(x))), self._shortcut(x))
