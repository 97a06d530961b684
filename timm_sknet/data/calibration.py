"""Calibration images for int8 quantization: a user's own folder, or the synthetic shapes.

int8 needs a few hundred images like the ones the model will see, preprocessed exactly as at inference
(the model's own timm eval transform). A folder of the user's images is the right choice; the synthetic
shapes are the fallback that needs no data, fine for the embedded model (trained on them) and only a
rough stand-in for an ImageNet model.
"""
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from timm.data import create_transform, resolve_data_config

from .images import load_image
from .synthetic import SyntheticShapes

__all__ = ['DEFAULT_CALIBRATION_IMAGES', 'IMAGE_SUFFIXES', 'calibration_batches']

DEFAULT_CALIBRATION_IMAGES = 300
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def _folder_images(folder: Path, limit: int) -> List:
    if not folder.is_dir():
        raise FileNotFoundError(f'calibration folder not found: {folder} (give a folder of images)')
    files = sorted(p for p in folder.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in calibration folder {folder}')
    return [load_image(p) for p in files]


def calibration_batches(model: nn.Module, image_dir: Optional[Union[str, Path]] = None,
                        num_images: int = DEFAULT_CALIBRATION_IMAGES, batch_size: int = 32, seed: int = 0,
                        input_size: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
    """Batches of up to ``num_images`` images from ``image_dir`` (searched recursively), or synthetic shapes,
    through ``model``'s eval transform (at ``input_size`` (C, H, W) if given)."""
    config = resolve_data_config({'input_size': tuple(input_size)} if input_size else {}, model=model)
    transform = create_transform(**config, is_training=False)
    if image_dir is not None:
        images = _folder_images(Path(image_dir), num_images)
    else:
        classes = min(max(int(getattr(model, 'num_classes', 0) or 0), 2), 8)
        ds = SyntheticShapes(num_images, image_size=config['input_size'][-1], seed=seed, split='calibration',
                             num_classes=classes)
        images = [ds.image(i) for i in range(num_images)]
    tensors = [transform(im) for im in images]
    return [torch.stack(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)]
