"""Models: SK residual blocks, the ``SKNet`` family registered in timm, feature extraction, model sizes, and
models built from local checkpoint files.

Importing this package registers ``sknet18`` ... ``sknet152`` and ``sknet_tiny`` in timm.
"""
from .blocks import SKBasicBlock, SKBottleneck
from .checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from .sknets import SKNet

__all__ = ['CheckpointError', 'SKBasicBlock', 'SKBottleneck', 'SKNet', 'model_from_checkpoint', 'read_checkpoint']
