"""A synthetic multi-scale shapes dataset, deterministic by seed, for studying SK attention vs object size.

The paper's Fig. 3 asks whether an SK unit attends more to its larger kernel as the object grows. Natural
images confound size with everything else; here the object's size is drawn per sample, *within* every
class, and recorded, so a network must recognise each shape at several scales and the analysis knows
each object's exact size.

Each image is one filled or outlined shape (``CLASSES``) on a noisy two-tone gradient background, with a
random colour, rotation and position. ``scale`` is the diameter of the shape's bounding circle as a
fraction of the image side. Every sample is a pure function of ``(seed, split, index)``: random access,
any number of loader workers and any iteration order give the same pixels. Only torch and PIL are used.
"""
import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from ..file_io import atomic_folder

__all__ = ['CLASSES', 'ShapeSpec', 'SyntheticShapes', 'write_image_folder', 'render_shape']

#: Class names, in label order; ``num_classes=k`` uses the first k. Hollow twins (ring/disk, frame/square)
#: make stroke width, which scales with the object, part of the evidence.
CLASSES: Tuple[str, ...] = ('disk', 'square', 'triangle', 'cross', 'star', 'ring', 'frame', 'crescent')

#: Default object sizes (fraction of the image side): a 4.5x range inside every class.
DEFAULT_SCALE_RANGE: Tuple[float, float] = (0.2, 0.9)

_SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges at every scale


@dataclass(frozen=True)
class ShapeSpec:
    """Everything that determines one image; ``scale`` is the object's diameter / image side."""
    label: int
    class_name: str
    scale: float
    center: Tuple[float, float]  # (x, y) as fractions of the image side
    angle: float  # degrees
    foreground: Tuple[int, int, int]
    background: Tuple[Tuple[int, int, int], Tuple[int, int, int]]  # gradient end colours
    noise_std: float  # pixel noise, in 0..255 units
    noise_seed: int


def _polygon(n: int, radius: float, cx: float, cy: float, angle: float,
             inner: Optional[float] = None) -> List[Tuple[float, float]]:
    """Vertices of a regular n-gon (or a star, with ``inner`` radius between the tips)."""
    points = []
    steps = 2 * n if inner is not None else n
    for k in range(steps):
        r = inner if (inner is not None and k % 2) else radius
        t = math.radians(angle) + 2 * math.pi * k / steps - math.pi / 2
        points.append((cx + r * math.cos(t), cy + r * math.sin(t)))
    return points


def _rotated(points: Sequence[Tuple[float, float]], cx: float, cy: float, angle: float) -> List[Tuple[float, float]]:
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, cx: float, cy: float, r: float, angle: float) -> None:
    """Draw shape ``name`` into a mask (255 inside), within radius ``r`` of (cx, cy); strokes scale with ``r``."""
    fill, hole = 255, 0
    stroke = max(1.0, 0.28 * r)
    if name == 'disk':
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif name == 'ring':
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        ri = r - stroke
        draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=hole)
    elif name in ('square', 'frame'):
        h = r / math.sqrt(2)
        outer = _rotated([(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)], cx, cy, angle)
        draw.polygon(outer, fill=fill)
        if name == 'frame':
            hi = h - stroke / math.sqrt(2) * 1.2
            inner = _rotated(
                [(cx - hi, cy - hi), (cx + hi, cy - hi), (cx + hi, cy + hi), (cx - hi, cy + hi)], cx, cy, angle)
            draw.polygon(inner, fill=hole)
    elif name == 'triangle':
        draw.polygon(_polygon(3, r, cx, cy, angle), fill=fill)
    elif name == 'cross':
        w = 0.3 * r
        bar = [(cx - r, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx - r, cy + w)]
        draw.polygon(_rotated(bar, cx, cy, angle), fill=fill)
        draw.polygon(_rotated(bar, cx, cy, angle + 90), fill=fill)
    elif name == 'star':
        draw.polygon(_polygon(5, r, cx, cy, angle, inner=0.42 * r), fill=fill)
    elif name == 'crescent':
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        off = 0.45 * r
        ox, oy = cx + off * math.cos(math.radians(angle)), cy + off * math.sin(math.radians(angle))
        rc = 0.8 * r
        draw.ellipse([ox - rc, oy - rc, ox + rc, oy + rc], fill=hole)
    else:
        raise ValueError(f'unknown shape {name!r}; known shapes: {", ".join(CLASSES)}')


def render_shape(spec: ShapeSpec, image_size: int) -> Image.Image:
    """Render ``spec`` as an RGB image of ``image_size`` x ``image_size`` pixels."""
    big = image_size * _SUPERSAMPLE
    # Mask of the shape; holes (ring, frame, crescent) are drawn back in as 0.
    mask = Image.new('L', (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = spec.center[0] * big, spec.center[1] * big
    r = spec.scale * big / 2
    _draw_shape(draw, spec.class_name, cx, cy, r, spec.angle)
    mask = mask.resize((image_size, image_size), Image.Resampling.BOX)

    # Background: a linear gradient between two colours along a random-looking but seeded direction.
    g = torch.Generator().manual_seed(spec.noise_seed)
    c0 = torch.tensor(spec.background[0], dtype=torch.float32)
    c1 = torch.tensor(spec.background[1], dtype=torch.float32)
    theta = torch.rand((), generator=g) * 2 * math.pi
    coords = torch.linspace(0, 1, image_size)
    yy, xx = torch.meshgrid(coords, coords, indexing='ij')
    t = ((xx - 0.5) * torch.cos(theta) + (yy - 0.5) * torch.sin(theta) + 0.71) / 1.42
    bg = c0 + (c1 - c0) * t[..., None]
    fg = torch.tensor(spec.foreground, dtype=torch.float32).expand_as(bg)
    alpha = _pil_to_tensor(mask).float()[..., None] / 255
    img = bg * (1 - alpha) + fg * alpha
    img = img + torch.randn(img.shape, generator=g) * spec.noise_std
    img = img.add_(0.5).clamp_(0, 255).to(torch.uint8)  # round half up (torch.round is slow on some CPUs)
    return Image.frombytes('RGB', (image_size, image_size), img.contiguous().numpy().tobytes())


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(img.size[1], img.size[0])


def _random_colour(rng: random.Random) -> Tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def _luma(c: Sequence[int]) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


class SyntheticShapes(Dataset):
    """Shapes at controlled, recorded scales; ``dataset[i] -> (PIL image or transformed, label)``.

    Args:
        num_samples: length of the dataset.
        image_size: side of the square images, in pixels.
        seed: master seed; ``(seed, split, index)`` fixes every pixel of a sample.
        split: any name; different names give disjoint random streams (``'train'``, ``'validation'``).
        num_classes: use the first ``num_classes`` entries of ``CLASSES``.
        scale_range: (min, max) object diameter as a fraction of the image side, drawn log-uniformly.
        center_jitter: how far the centre may move from the image centre, as a fraction of the room the
            object leaves (0 = always centred, 1 = anywhere it still fits).
        noise_std: background/object pixel noise (0..255 units).
        transform: applied to the PIL image (timm's ``create_loader`` sets this attribute).
        target_transform: applied to the label.

    Labels are balanced: sample ``i`` has label ``i % num_classes``.
    """

    def __init__(
            self,
            num_samples: int = 4096,
            image_size: int = 64,
            seed: int = 0,
            split: str = 'train',
            num_classes: int = len(CLASSES),
            scale_range: Tuple[float, float] = DEFAULT_SCALE_RANGE,
            center_jitter: float = 1.0,
            noise_std: float = 8.0,
            transform: Optional[Callable] = None,
            target_transform: Optional[Callable] = None,
    ):
        if not 2 <= num_classes <= len(CLASSES):
            raise ValueError(f'num_classes must be in 2..{len(CLASSES)} (the shapes in CLASSES), got {num_classes}')
        if num_samples < 1:
            raise ValueError(f'num_samples must be >= 1, got {num_samples}')
        if image_size < 8:
            raise ValueError(f'image_size must be >= 8 pixels, got {image_size}')
        lo, hi = scale_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f'scale_range must satisfy 0 < min <= max <= 1 (fractions of the image side), '
                             f'got {scale_range}')
        if not 0 <= center_jitter <= 1:
            raise ValueError(f'center_jitter must be in [0, 1], got {center_jitter}')
        self.num_samples = num_samples
        self.image_size = image_size
        self.seed = seed
        self.split = split
        self.num_classes = num_classes
        self.classes = list(CLASSES[:num_classes])
        self.scale_range = (float(lo), float(hi))
        self.center_jitter = center_jitter
        self.noise_std = noise_std
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return self.num_samples

    def spec(self, index: int) -> ShapeSpec:
        """The parameters of sample ``index`` (cheap: nothing is rendered)."""
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f'index {index} out of range for {self.num_samples} samples')
        index %= self.num_samples
        rng = random.Random(f'timm-sknet-shapes/{self.seed}/{self.split}/{index}')
        label = index % self.num_classes
        lo, hi = self.scale_range
        scale = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        room = (1 - scale) / 2 * self.center_jitter
        center = (0.5 + rng.uniform(-room, room), 0.5 + rng.uniform(-room, room))
        angle = rng.uniform(0, 360)
        bg0 = _random_colour(rng)
        r, g, b = (min(255, max(0, c + rng.randint(-40, 40))) for c in bg0)
        bg1 = (r, g, b)
        while True:  # the object must stand out from the background on average
            fg = _random_colour(rng)
            if abs(_luma(fg) - (_luma(bg0) + _luma(bg1)) / 2) > 80:
                break
        return ShapeSpec(
            label=label, class_name=self.classes[label], scale=scale, center=center, angle=angle,
            foreground=fg, background=(bg0, bg1), noise_std=self.noise_std, noise_seed=rng.getrandbits(62))

    def metadata(self, index: int) -> Dict[str, Any]:
        """The recorded parameters of sample ``index`` as a flat dict (for CSVs and analysis)."""
        s = self.spec(index)
        return dict(index=index, label=s.label, class_name=s.class_name, scale=s.scale,
                    center_x=s.center[0], center_y=s.center[1], angle=s.angle)

    @property
    def scales(self) -> List[float]:
        """Object scale of every sample, in index order."""
        return [self.spec(i).scale for i in range(self.num_samples)]

    @property
    def targets(self) -> List[int]:
        return [i % self.num_classes for i in range(self.num_samples)]

    def image(self, index: int) -> Image.Image:
        return render_shape(self.spec(index), self.image_size)

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        spec = self.spec(index)
        img = render_shape(spec, self.image_size)
        target = spec.label
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_samples={self.num_samples}, image_size={self.image_size}, '
                f'seed={self.seed}, split={self.split!r}, num_classes={self.num_classes}, '
                f'scale_range={self.scale_range})')


METADATA_FILE = 'metadata.csv'


def write_image_folder(
        root: Union[str, Path],
        splits: Dict[str, int],
        image_size: int = 64,
        seed: int = 0,
        overwrite: bool = False,
        **dataset_kwargs: Any,
) -> Path:
    """Write ``root/<split>/<class>/<index>.png`` (torchvision/timm ImageFolder layout) for each split.

    Each split folder also gets ``metadata.csv`` (file, label, class_name, scale, centre, angle), so the
    recorded scales travel with the images. The tree is built in a temporary folder beside ``root`` and
    renamed into place, so an interrupted run never leaves a partial dataset that looks complete.

    Args:
        root: destination folder (must not exist unless ``overwrite``).
        splits: split name -> number of images, e.g. ``{'train': 4000, 'validation': 800}``.
        image_size: passed to ``SyntheticShapes``.
        seed: passed to ``SyntheticShapes``.
        **dataset_kwargs: passed to ``SyntheticShapes``.
    """
    root = Path(root)
    if root.exists() and not overwrite:
        raise FileExistsError(f'{root} exists; pass overwrite=True or choose another folder')
    with atomic_folder(root) as tmp:
        for split, count in splits.items():
            ds = SyntheticShapes(count, image_size=image_size, seed=seed, split=split, **dataset_kwargs)
            split_dir = tmp / split
            for name in ds.classes:
                (split_dir / name).mkdir(parents=True)
            rows = []
            for i in range(len(ds)):
                meta = ds.metadata(i)
                rel = f'{meta["class_name"]}/{i:06d}.png'
                ds.image(i).save(split_dir / rel)
                rows.append({'file': rel, **_csv_row(meta)})
            with open(split_dir / METADATA_FILE, 'w', newline='') as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    return root


def _csv_row(meta: Dict[str, Any]) -> Dict[str, Any]:
    """Metadata with floats rounded for CSV (6 decimals keeps scales exact enough for analysis)."""
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in meta.items() if k != 'index'}
