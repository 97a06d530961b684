"""Layers: the Selective Kernel unit, squeeze-and-excitation, and the fused inference forms of conv-BN layers.

Nothing here knows about whole networks; :mod:`timm_sknet.models` builds them from these parts.
"""
from .batchnorm_fold import fold_batchnorm, is_batchnorm, unfused_batchnorms
from .conv_norm_act import FusableConvNormAct, FusedConvAct, fold_sequential
from .selective_kernel import (
    FusedSelectiveKernelAttn,
    SelectiveKernel,
    SelectiveKernelAttn,
    attn_channels_for,
    select_paths,
)
from .squeeze_excite import SEModule

__all__ = [
    'FusableConvNormAct', 'FusedConvAct', 'FusedSelectiveKernelAttn', 'SEModule', 'SelectiveKernel',
    'SelectiveKernelAttn', 'attn_channels_for', 'fold_batchnorm', 'fold_sequential', 'is_batchnorm',
    'select_paths', 'unfused_batchnorms',
]
