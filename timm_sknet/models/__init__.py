"""Models: SK residual blocks, the ``SKNet`` family registered in timm, feature extraction, model sizes.

Importing this package registers ``sknet18`` ... ``sknet152`` and ``sknet_tiny`` in timm.
"""
from .blocks import SKBasicBlock, SKBottleneck
from .sknets import SKNet

__all__ = ['SKBasicBlock', 'SKBottleneck', 'SKNet']
