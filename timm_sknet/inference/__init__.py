"""Inference: one call to the fastest runtime (``optimize``), BatchNorm folding, export and compilation."""
from .backends import BACKENDS, PRECISIONS, BackendUnavailable, check_backend_precision
from .export import export_onnx, export_torchscript
from .fuse import fuse_model
from .machine import machine_info, native_bf16, native_int8, resolve_device
from .optimized_model import TOLERANCES, OptimizationError, OptimizedModel, choose_backend, optimize

__all__ = [
    'BACKENDS', 'PRECISIONS', 'TOLERANCES', 'BackendUnavailable', 'OptimizationError', 'OptimizedModel',
    'check_backend_precision', 'choose_backend', 'export_onnx', 'export_torchscript', 'fuse_model', 'machine_info',
    'native_bf16', 'native_int8', 'optimize', 'resolve_device',
]
