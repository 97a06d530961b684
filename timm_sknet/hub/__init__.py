"""Weights: verified downloads from the Hugging Face Hub, the Hub-folder writer, local checkpoints, and the
model embedded in the package.

Beside :mod:`timm_sknet.models`, which asks it for weights; it never imports the models.
"""
from .checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from .download import WEIGHTS_FILENAME, configured_stall_timeout, fetch_verified_weights
from .embedded import EMBEDDED_CLASSES, EMBEDDED_TAG, verify_embedded_weights
from .failures import hub_model_errors
from .folder import export_hub_folder, model_card, write_model_files
from .pins import PINS

__all__ = [
    'CheckpointError', 'EMBEDDED_CLASSES', 'EMBEDDED_TAG', 'PINS', 'WEIGHTS_FILENAME', 'configured_stall_timeout',
    'export_hub_folder', 'fetch_verified_weights', 'hub_model_errors', 'model_card', 'model_from_checkpoint',
    'read_checkpoint', 'verify_embedded_weights', 'write_model_files',
]
