"""Training checkpoints: a Hub-format model folder plus the state needed to resume.

A checkpoint folder is what ``timm.create_model('local-dir:<folder>', pretrained=True)`` loads
(``config.json`` + ``model.safetensors``), with ``training_state.pt`` beside it holding what resuming needs
(optimizer, scheduler, EMA, grad scaler, epoch, step). The state file holds only tensors and plain
Python values, so it loads with ``torch.load(weights_only=True)``: opening a checkpoint never runs code.

Folders are written next to their destination and renamed into place, so a crash mid-write leaves the
previous checkpoint, never a half-written one under the final name.
"""
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from safetensors.torch import load_file
from torch import nn

from timm.utils import update_summary

from ..file_io import atomic_file, atomic_folder
from ..hub.folder import write_model_files

__all__ = ['TRAINING_STATE_FILE', 'load_checkpoint', 'resolve_resume_path', 'save_checkpoint', 'write_metrics']

TRAINING_STATE_FILE = 'training_state.pt'
WEIGHTS_FILE = 'model.safetensors'


def save_checkpoint(
        dest: Union[str, Path],
        model: nn.Module,
        training_state: Optional[Dict[str, Any]] = None,
        label_names: Optional[Sequence[str]] = None,
) -> Path:
    """Atomically write a checkpoint folder: the model in Hub layout, plus ``training_state`` if given."""
    with atomic_folder(dest) as tmp:
        write_model_files(model, tmp, label_names=label_names)
        if training_state is not None:
            torch.save(training_state, tmp / TRAINING_STATE_FILE)
    return Path(dest)


def write_metrics(path: Union[str, Path], history: Sequence[Dict[str, Any]]) -> Path:
    """Write one CSV row per epoch with timm's ``update_summary`` (``epoch, train_loss, eval_*, lr``),
    rebuilt from the full history each time and swapped in whole, so a resumed run's file stays complete."""
    with atomic_file(path) as tmp:
        for i, row in enumerate(history):
            train = {k.removeprefix('train_'): v for k, v in row.items() if k.startswith('train_')}
            train['images_per_s'] = row['images_per_s']
            val = {k.replace('val_', '', 1): v for k, v in row.items() if 'val_' in k}
            update_summary(row['epoch'], train, val, tmp, lr=row['lr'], write_header=i == 0)
    return Path(path)


def read_config(folder: Union[str, Path]) -> Dict[str, Any]:
    with open(Path(folder) / 'config.json') as f:
        return json.load(f)


def load_checkpoint(folder: Union[str, Path], model: nn.Module) -> Dict[str, Any]:
    """Load a checkpoint's weights into ``model`` (strictly) and return its training state.

    Raises:
        FileNotFoundError: ``folder`` is not a checkpoint written by ``save_checkpoint`` with state.
        ValueError: the checkpoint was made for a different architecture or number of classes.
    """
    folder = Path(folder)
    missing = [n for n in ('config.json', WEIGHTS_FILE, TRAINING_STATE_FILE) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f'{folder} is not a resumable checkpoint (missing {", ".join(missing)}). Pass the '
            f'"checkpoint" folder inside a training output folder, or the output folder itself.')
    config = read_config(folder)
    arch = getattr(model, 'pretrained_cfg').get('architecture')
    if config.get('architecture') != arch:
        raise ValueError(
            f'checkpoint {folder} is for architecture {config.get("architecture")!r}, but the model being '
            f'trained is {arch!r}; resume with --model {config.get("architecture")}')
    state_dict = load_file(str(folder / WEIGHTS_FILE))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f'checkpoint {folder} does not fit the model being trained (different model kwargs or '
            f'num_classes?): {e}') from None
    return torch.load(folder / TRAINING_STATE_FILE, map_location='cpu', weights_only=True)


def resolve_resume_path(path: Union[str, Path]) -> Path:
    """Accept either a checkpoint folder or a training output folder containing ``checkpoint/``."""
    path = Path(path)
    if (path / TRAINING_STATE_FILE).is_file():
        return path
    if (path / 'checkpoint' / TRAINING_STATE_FILE).is_file():
        return path / 'checkpoint'
    raise FileNotFoundError(
        f'no checkpoint to resume at {path}: expected {path / TRAINING_STATE_FILE} or '
        f'{path / "checkpoint" / TRAINING_STATE_FILE} (written by timm-sknet train after each epoch)')
