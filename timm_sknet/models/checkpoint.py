"""Local checkpoint files: read one, and build the model it fits.

The one place that opens a user's checkpoint (``.safetensors``, or ``.pth`` / ``.pth.tar`` / ``.bin`` read
with ``weights_only=True``, so opening a file never runs code). timm's ``load_state_dict`` unwraps the usual
wrappers (``state_dict`` / ``state_dict_ema`` / ``model``, DDP's ``module.`` prefixes); the classifier and
first convolution tell how many classes and input channels the model needs.
"""
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

import timm
from timm.models import load_state_dict

__all__ = ['CheckpointError', 'checkpoint_head', 'model_from_checkpoint', 'read_checkpoint']


class CheckpointError(ValueError):
    """A checkpoint file cannot be read, or does not fit the model asked for; the message says what to pass."""


def read_checkpoint(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The state dict in ``path`` (EMA weights preferred, as timm does).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a state dict torch or safetensors can read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint file not found: {path} (check the path)')
    try:
        return load_state_dict(str(path), weights_only=True)
    except Exception as e:  # noqa: BLE001  (any decode failure is the file's fault)
        detail = str(e).splitlines()[0] if str(e) else ''
        raise CheckpointError(
            f'cannot read checkpoint {path} ({type(e).__name__}: {detail}); pass a .safetensors file or a '
            f'.pth state_dict saved with torch.save') from None


def checkpoint_head(state_dict: Dict[str, torch.Tensor]) -> Tuple[Optional[int], Optional[int]]:
    """(num_classes, in_chans) of a ResNet-style state dict: 0 classes for a headless one, None if unknown."""
    if 'fc.weight' in state_dict:
        num_classes: Optional[int] = int(state_dict['fc.weight'].shape[0])
    elif not any(k.startswith('fc.') for k in state_dict):
        num_classes = 0
    else:
        num_classes = None
    in_chans = int(state_dict['conv1.weight'].shape[1]) if 'conv1.weight' in state_dict else None
    return num_classes, in_chans


def model_from_checkpoint(path: Union[str, Path], model_name: str, **model_kwargs: Any) -> nn.Module:
    """``timm.create_model(model_name)`` sized like the checkpoint (classes, input channels), loaded strictly.

    Raises:
        FileNotFoundError, CheckpointError: see :func:`read_checkpoint`; CheckpointError also when the
            weights do not fit the model (another architecture, other ``model_kwargs``).
    """
    state_dict = read_checkpoint(path)
    num_classes, in_chans = checkpoint_head(state_dict)
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs.setdefault('num_classes', num_classes)
    if in_chans is not None:
        kwargs.setdefault('in_chans', in_chans)
    model = timm.create_model(model_name, **kwargs)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        detail = ' '.join(str(e).split())
        detail = detail if len(detail) <= 240 else detail[:240] + '...'
        raise CheckpointError(
            f'checkpoint {path} does not fit {model_name} built with {kwargs} ({detail}); pass the model name '
            f'(--model) and model_kwargs it was trained with') from None
    return model
