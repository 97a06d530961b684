"""Selective Kernel Networks for timm. ``import timm_sknet`` registers the ``sknet*`` models."""
from .errors import WeightsError
from .se_module import SEModule
from .sk_blocks import SKBasicBlock, SKBlock
from .sk_unit import SelectiveKernel, SelectiveKernelAttn, select_paths
from .sknet_models import SKNet

__version__ = '0.1.0'

__all__ = [
    'SEModule', 'SKBasicBlock', 'SKBlock', 'SKNet', 'SelectiveKernel', 'SelectiveKernelAttn',
    'WeightsError', 'select_paths',
]
