"""Inference: BatchNorm folding for the whole model, export (ONNX, TorchScript) and compilation."""
from .export import compile_for_inference, export_onnx, export_torchscript
from .fuse import fuse_model

__all__ = ['compile_for_inference', 'export_onnx', 'export_torchscript', 'fuse_model']
