"""Selective Kernel Networks (Li et al., CVPR 2019) for timm.

``import timm_sknet`` registers the ``sknet*`` models in timm and exposes the building blocks. It loads the
layers, the models and the weights code only; what is built on them is imported only when used.

Layout (dependencies point one way, checked by import-linter contracts in pyproject.toml)::

    cli
     -> serving | batch | training | bench | analysis | caffe      (the packages built on the models)
     -> data                                                       (images, labels, synthetic shapes)
     -> detection                                                  (detector backbones and their export)
     -> inference                                                  (optimize, export)
     -> models
     -> hub | layers
     -> errors | file_io | progress
"""
from . import after_fork  # noqa: F401  (forked children run torch on one thread: they would hang otherwise)
from .errors import WeightsError
from .layers import SelectiveKernel, SelectiveKernelAttn, SEModule, select_paths
from .models import SKBasicBlock, SKBottleneck, SKNet

__version__ = '0.2.0'

__all__ = [
    'SEModule', 'SKBasicBlock', 'SKBottleneck', 'SKNet', 'SelectiveKernel', 'SelectiveKernelAttn',
    'WeightsError', 'select_paths',
]
