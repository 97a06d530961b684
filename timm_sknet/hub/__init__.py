"""Weights: verified downloads from the Hugging Face Hub, their errors and pins, the Hub-folder writer, and the
model embedded in the package.

Beside :mod:`timm_sknet.layers`, below :mod:`timm_sknet.models`, which asks it for weights: it never builds a
model (huggingface_hub moves the bytes; this package checks them and explains failures).
"""
from .download import WEIGHTS_FILENAME, fetch_verified_weights
from .embedded import EMBEDDED_CLASSES, EMBEDDED_TAG, verify_embedded_weights
from .failures import hub_model_errors
from .folder import export_hub_folder, model_card, write_model_files
from .pins import PINS

__all__ = [
    'EMBEDDED_CLASSES', 'EMBEDDED_TAG', 'PINS', 'WEIGHTS_FILENAME', 'export_hub_folder', 'fetch_verified_weights',
    'hub_model_errors', 'model_card', 'verify_embedded_weights', 'write_model_files',
]
