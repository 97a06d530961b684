"""The paper's scale analysis (Li et al. 2019, "Analysis and Interpretation", Fig. 3): does attention move
to the larger kernel as the object grows?

For each image, the object is enlarged by a centre crop of 1/s of the model's usual view, resized back to
the model's input size (s = 1.0, 1.5, 2.0). For each SK unit and scale we report the *mean attention
difference*: the selection weight of the path with the largest receptive field minus that of the path with
the smallest (for the paper's M = 2: "5x5" minus 3x3), averaged over channels, then over images. Units are
named as in the paper, ``SK_{stage}_{block}`` (see :mod:`timm_sknet.analysis.attention`).

For M > 2 the same definition is used (largest-extent path minus smallest-extent path); the paths in
between are ignored, which keeps the number comparable with the paper's two-path figure.

The paper, with its trained SKNet-50 on ImageNet validation images, reports that the difference grows with
the object size in the low and middle units (SK_2_3, SK_3_4). This module measures and says which way the
numbers go; random or other weights give other numbers. The main job and the ``attention`` command both run
it.
"""
import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from timm.data import create_transform, resolve_data_config

from ..data.images import load_image
from ..data.synthetic import SyntheticShapes
from ..file_io import atomic_file
from ..progress import progress
from .attention import SKUnitInfo, record_sk_attention

__all__ = [
    'ANALYSIS_SCALE_RANGE', 'DEFAULT_SCALES', 'ScaleAnalysis', 'UnitScaleStat', 'attention_difference',
    'centred_shapes', 'run_scale_analysis', 'zoom_transform',
]

DEFAULT_SCALES = (1.0, 1.5, 2.0)
#: Object sizes (fraction of the image side) of :func:`centred_shapes`: at most 0.45, so 2x still fits.
ANALYSIS_SCALE_RANGE = (0.2, 0.45)

CSV_COLUMNS = (
    'unit', 'module_path', 'stage', 'block', 'num_paths', 'larger_path', 'smaller_path', 'scale',
    'mean_diff', 'std_diff', 'n_images',
)


def attention_difference(weights: torch.Tensor, larger: int, smaller: int) -> torch.Tensor:
    """Per-image mean over channels of ``weights[:, larger] - weights[:, smaller]``; (B, M, C) -> (B,)."""
    return (weights[:, larger].float() - weights[:, smaller].float()).mean(dim=1)


def zoom_transform(data_config: Dict[str, Any], scale: float) -> Callable[[Any], torch.Tensor]:
    """The model's eval transform with the object enlarged ``scale`` times.

    timm's eval transform resizes the short side to ``size / crop_pct`` and centre-crops ``size``;
    dividing ``crop_pct`` by ``scale`` crops the central 1/scale of that view at full resolution, so the
    object appears ``scale`` times larger while the input size stays the same.
    """
    if not scale > 0:
        raise ValueError(f'scale must be > 0, got {scale!r}')
    config = dict(data_config)
    config['crop_pct'] = config.get('crop_pct', 0.875) / scale
    config['crop_mode'] = 'center'
    return create_transform(**config, is_training=False)


def centred_shapes(num: int, image_size: int = 64, seed: int = 0, num_classes: int = 6) -> List[Any]:
    """``num`` synthetic shapes (:class:`~timm_sknet.data.synthetic.SyntheticShapes`), centred and of
    :data:`ANALYSIS_SCALE_RANGE` size, so that a 2x enlargement keeps the whole object in view.

    They exercise the analysis without data; for a model trained on them (the embedded one) they are also
    what it knows.
    """
    ds = SyntheticShapes(num, image_size=image_size, seed=seed, split='analysis', num_classes=num_classes,
                         scale_range=ANALYSIS_SCALE_RANGE, center_jitter=0.0)
    return [ds.image(i) for i in range(num)]


@dataclass
class UnitScaleStat:
    """Mean attention difference of one unit at one scale: mean and std over images."""
    mean: float
    std: float
    n: int


@dataclass
class ScaleAnalysis:
    """Result of :func:`run_scale_analysis`: ``stats[unit][scale]`` for every SK unit and scale."""
    scales: List[float]
    units: Dict[str, SKUnitInfo]
    stats: Dict[str, Dict[float, UnitScaleStat]] = field(default_factory=dict)
    model_name: str = ''

    def rows(self) -> List[Dict[str, Any]]:
        """One row per (unit, scale), in model order then scale order, with :data:`CSV_COLUMNS` keys."""
        rows = []
        for name, info in self.units.items():
            for scale in self.scales:
                stat = self.stats[name][scale]
                rows.append({
                    'unit': name, 'module_path': info.module_path,
                    'stage': '' if info.stage is None else info.stage,
                    'block': '' if info.block is None else info.block,
                    'num_paths': info.num_paths, 'larger_path': info.largest_path,
                    'smaller_path': info.smallest_path, 'scale': scale,
                    'mean_diff': stat.mean, 'std_diff': stat.std, 'n_images': stat.n,
                })
        return rows

    def table(self) -> str:
        """Plain-text table: one line per unit, one column per scale."""
        head = f'{"unit":<12}' + ''.join(f'{f"{s:g}x":>11}' for s in self.scales)
        lines = [head]
        for name in self.units:
            lines.append(f'{name:<12}' + ''.join(f'{self.stats[name][s].mean:>+11.4f}' for s in self.scales))
        return '\n'.join(lines)

    def mean_diffs(self) -> Dict[str, List[float]]:
        """``{unit: [mean difference at each scale]}`` in model order."""
        return {name: [self.stats[name][s].mean for s in self.scales] for name in self.units}

    def verdict(self) -> Dict[str, Any]:
        """Which units' difference grows from the smallest to the largest scale, and a one-paragraph answer."""
        results = self.mean_diffs()
        grows = [n for n, v in results.items() if v[-1] > v[0]]
        monotone = [n for n, v in results.items() if all(b > a for a, b in zip(v, v[1:]))]
        n = len(results)
        means = [sum(v[i] for v in results.values()) / n for i in range(len(self.scales))]
        text = (f"Does attention to the larger kernel grow with object size (the paper's claim)? "
                f'{_claim(len(grows), len(monotone), n)}. The difference grows from {self.scales[0]:g}x to '
                f'{self.scales[-1]:g}x in {len(grows)} of {n} units ({", ".join(grows) or "none"}), '
                f'monotonically over all scales in {len(monotone)}; averaged over units it goes '
                + ' -> '.join(f'{m:+.4f}' for m in means) + '.')
        return dict(units_growing=grows, units_monotone=monotone, mean_by_scale=means, statement=text)

    def write_csv(self, path: Union[str, Path]) -> Path:
        """Write :meth:`rows` as CSV, atomically (a reader never sees half a file)."""
        path = Path(path)
        with atomic_file(path) as tmp:
            with open(tmp, 'w', newline='') as f:
                writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
                writer.writeheader()
                for row in self.rows():
                    writer.writerow({k: (f'{v:.6f}' if isinstance(v, float) and k != 'scale' else v)
                                     for k, v in row.items()})
        return path

    def save_plot(self, path: Union[str, Path]) -> Path:
        """Draw the paper's Fig. 3-style plot (mean attention difference per SK unit, a line per scale).

        Raises:
            ModuleNotFoundError: matplotlib is missing; ``pip install "timm-sknet[plot]"``.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ModuleNotFoundError(
                'plotting needs matplotlib: pip install "timm-sknet[plot]" (or pip install matplotlib)',
                name='matplotlib') from None
        path = Path(path)
        names = list(self.units)
        fig = Figure(figsize=(max(6.0, 0.45 * len(names) + 2), 4.0), layout='constrained')
        ax = fig.add_subplot()
        xs = list(range(len(names)))
        for scale in self.scales:
            means = [self.stats[n][scale].mean for n in names]
            ax.plot(xs, means, marker='o', markersize=3, label=f'{scale:g}x')
        ax.axhline(0.0, color='grey', linewidth=0.8)
        ax.set_xticks(xs, names, rotation=90, fontsize=7)
        ax.set_ylabel('mean attention difference\n(larger kernel - smaller kernel)')
        title = 'SK attention vs object scale'
        ax.set_title(f'{title}: {self.model_name}' if self.model_name else title)
        ax.legend(title='object scale')
        ax.grid(alpha=0.3)
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=150, format=path.suffix.lstrip('.') or 'png')
        return path


def _claim(grows: int, monotone: int, n: int) -> str:
    if monotone == n:
        return 'yes: in every SK unit'
    if grows > n / 2:
        return f'mostly: in {grows} of {n} SK units'
    if grows:
        return f'mostly not: it grows in {grows} of {n} SK units and does not in the other {n - grows}'
    return f'no: it grows in none of the {n} SK units'



def run_scale_analysis(
        model: nn.Module,
        images: Sequence[Union[str, Path, Any]],
        scales: Sequence[float] = DEFAULT_SCALES,
        data_config: Optional[Dict[str, Any]] = None,
        batch_size: int = 8,
        show_progress: Optional[bool] = None,
) -> ScaleAnalysis:
    """Mean attention difference (larger minus smaller kernel) of every SK unit at every object scale.

    Args:
        model: an SKNet (any weights). Run in eval mode; its train/eval state is restored afterwards.
        images: file paths or ``PIL.Image`` objects.
        scales: object enlargement factors; the paper uses 1.0, 1.5, 2.0.
        data_config: timm data config (``input_size``, ``crop_pct``, ``interpolation``, ``mean``, ``std``);
            default: ``resolve_data_config(model=model)``, i.e. the model's pretrained_cfg.
        batch_size: images per forward pass.
        show_progress: progress bar on stderr (None: only on a terminal).

    Raises:
        ValueError: no images or no scales; FileNotFoundError / ImageError: an unreadable image file.
    """
    if not images:
        raise ValueError('no images given: pass image files, or use centred_shapes(n) to generate some')
    scales = [float(s) for s in scales]
    if not scales:
        raise ValueError('no scales given; the paper uses 1.0, 1.5, 2.0')
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    pil_images = [load_image(im) if isinstance(im, (str, os.PathLike)) else im.convert('RGB') for im in images]
    data_config = dict(data_config or resolve_data_config(model=model))
    device = next(model.parameters()).device
    recorder = record_sk_attention(model)
    units = recorder.record.units
    per_image: Dict[str, Dict[float, List[torch.Tensor]]] = {n: {s: [] for s in scales} for n in units}

    batches = [(s, pil_images[i:i + batch_size]) for s in scales for i in range(0, len(pil_images), batch_size)]
    transforms = {s: zoom_transform(data_config, s) for s in scales}
    was_training = model.training
    model.eval()
    try:
        with recorder as rec, torch.inference_mode():
            for scale, batch in progress(batches, total=len(batches), desc='attention', enabled=show_progress):
                x = torch.stack([transforms[scale](im) for im in batch]).to(device)
                rec.clear()
                model(x)
                for name, weights in rec.items():
                    info = units[name]
                    diff = attention_difference(weights, info.largest_path, info.smallest_path)
                    per_image[name][scale].append(diff.cpu())
    finally:
        model.train(was_training)

    model_name = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture', '')
    result = ScaleAnalysis(scales=scales, units=units, model_name=model_name)
    for name in units:
        result.stats[name] = {}
        for scale in scales:
            diffs = torch.cat(per_image[name][scale]).double()
            std = diffs.std().item() if diffs.numel() > 1 else math.nan
            result.stats[name][scale] = UnitScaleStat(diffs.mean().item(), std, diffs.numel())
    return result
