"""Layers: the Selective Kernel unit, squeeze-and-excitation, and BatchNorm folding for inference.

Nothing here knows about whole networks; :mod:`timm_sknet.models` builds them from these parts.
"""
from .batchnorm_fold import bn_act_parts, fold_batchnorm, is_batchnorm, unfused_batchnorms
from .conv_norm_act import FusableConvNormAct, fold_sequential
from .selective_kernel import SelectiveKernel, SelectiveKernelAttn, attn_channels_for, select_paths
from .squeeze_excite import SEModule

__all__ = [
    'FusableConvNormAct', 'SEModule', 'SelectiveKernel', 'SelectiveKernelAttn', 'attn_channels_for', 'bn_act_parts',
    'fold_batchnorm', 'fold_sequential', 'is_batchnorm', 'select_paths', 'unfused_batchnorms',
]
