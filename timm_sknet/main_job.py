"""The package's main job, offline: the embedded SKNet predicts the bundled samples, then the paper's
attention-vs-object-scale analysis runs on it.

Everything it needs is package data (``sknet_tiny.synthetic`` weights, sample PNGs) or generated on the
spot (the synthetic shapes), so it runs on a fresh machine with no network.

The analysis follows Li et al. (2019), Sec. 4.3 / Fig. 3: enlarge the object by centre-crop and resize
(1.0x, 1.5x, 2.0x), and for every SK unit take the mean, over channels and images, of the attention on
the larger kernel minus the attention on the smaller one. The paper reports that this difference grows
with object size in the lower stages. We print what this model shows, whichever way it goes.
"""
import argparse
import csv
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from PIL import Image
from torch import nn

import timm
from timm.data import create_transform, resolve_data_config

from .embedded_model import EMBEDDED_TAG, SAMPLES_DIR, verify_embedded_weights
from .sk_unit import SelectiveKernel, SelectiveKernelAttn
from .synthetic_data import SyntheticShapes

__all__ = ['run_main_job', 'measure_attention_vs_scale', 'enlarge', 'write_samples', 'SCALE_FACTORS']

SCALE_FACTORS = (1.0, 1.5, 2.0)
#: Objects for the analysis: centred, at most 0.45 of the side, so that 2x enlargement still fits.
ANALYSIS_SCALE_RANGE = (0.2, 0.45)


def enlarge(img: Image.Image, factor: float) -> Image.Image:
    """Enlarge the centred content by ``factor``: centre-crop 1/factor of each side, resize back."""
    w, h = img.size
    cw, ch = w / factor, h / factor
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    return img.resize((w, h), Image.Resampling.BILINEAR, box=box)


def measure_attention_vs_scale(
        model: nn.Module,
        images: Sequence[Image.Image],
        transform,
        factors: Sequence[float] = SCALE_FACTORS,
        batch_size: int = 64,
) -> Dict[str, List[float]]:
    """Mean attention on the largest kernel minus the smallest, per SK unit, for each enlargement factor.

    Returns ``{unit name: [difference at factors[0], factors[1], ...]}`` in network order.

    LEAD: this is the minimal local version (forward hooks on ``SelectiveKernelAttn``, whose output is
    the softmax weights (B, M, C, 1, 1)); swap in the tools helper's recorder / ``scale_analysis`` API
    when merging, keeping this return shape for ``run_main_job``.
    """
    units = [(name, m) for name, m in model.named_modules() if isinstance(m, SelectiveKernel)]
    if not units:
        raise ValueError(f'{type(model).__name__} has no SelectiveKernel units to analyse')
    sums: Dict[str, List[float]] = {name: [0.0] * len(factors) for name, _ in units}
    current = {'factor': 0}
    handles = []

    def hook_for(name: str, unit: SelectiveKernel):
        large = max(range(unit.num_paths), key=lambda i: unit.kernel_sizes[i])
        small = min(range(unit.num_paths), key=lambda i: unit.kernel_sizes[i])

        def hook(module: nn.Module, inputs, weights: torch.Tensor) -> None:
            diff = (weights[:, large] - weights[:, small]).float().flatten(1).mean(1)  # per image
            sums[name][current['factor']] += diff.sum().item()
        return hook

    for name, unit in units:
        handles.append(unit.attn.register_forward_hook(hook_for(name, unit)))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for fi, factor in enumerate(factors):
                current['factor'] = fi
                for start in range(0, len(images), batch_size):
                    batch = torch.stack([transform(enlarge(im, factor)) for im in images[start:start + batch_size]])
                    model(batch.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: [s / len(images) for s in vals] for name, vals in sums.items()}


def _verdict(results: Dict[str, List[float]], factors: Sequence[float]) -> Dict[str, Any]:
    grows = [n for n, v in results.items() if v[-1] > v[0]]
    monotone = [n for n, v in results.items() if all(b > a for a, b in zip(v, v[1:]))]
    n = len(results)
    means = [sum(v[i] for v in results.values()) / n for i in range(len(factors))]
    if len(monotone) == n:
        claim = 'yes: in every SK unit'
    elif len(grows) > n / 2:
        claim = f'mostly: in {len(grows)} of {n} SK units'
    elif grows:
        claim = f'mostly not: it grows in {len(grows)} of {n} SK units and does not in the other {n - len(grows)}'
    else:
        claim = f'no: it grows in none of the {n} SK units'
    text = (f'Does attention to the larger kernel grow with object size (the paper\'s claim)? {claim}. '
            f'The difference grows from {factors[0]}x to {factors[-1]}x in {len(grows)} of {n} units '
            f'({", ".join(grows) or "none"}), monotonically over all factors in {len(monotone)}; averaged '
            f'over units it goes ' + ' -> '.join(f'{m:+.4f}' for m in means) + '.')
    return dict(units_growing=grows, units_monotone=monotone, mean_by_factor=means, statement=text)


def _plot(results: Dict[str, List[float]], factors: Sequence[float], path: Path) -> Optional[Path]:
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(results)
    width = 0.8 / len(factors)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names)), 3.8))
    for i, f in enumerate(factors):
        ax.bar([j + (i - (len(factors) - 1) / 2) * width for j in range(len(names))],
               [results[n][i] for n in names], width, label=f'object {f}x')
    ax.axhline(0, color='black', linewidth=0.6)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.replace('.conv1', '').replace('.conv2', '') for n in names], rotation=30, ha='right')
    ax.set_ylabel('mean attention: larger - smaller kernel')
    ax.set_title('SK attention vs object size (Li et al. 2019, Fig. 3 protocol)')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_samples(folder: Path, per_class: int = 1, image_size: int = 64, seed: int = 2019) -> List[Path]:
    """Write the bundled sample PNGs (``<index>_<class>_s<scale>.png``): how timm_sknet/samples was made."""
    folder.mkdir(parents=True, exist_ok=True)
    num_classes = len(timm.get_pretrained_cfg(EMBEDDED_TAG).label_names)
    ds = SyntheticShapes(per_class * num_classes, image_size=image_size, seed=seed, split='samples',
                         num_classes=num_classes)
    paths = []
    for i in range(len(ds)):
        spec = ds.spec(i)
        path = folder / f'{i:02d}_{spec.class_name}_s{spec.scale:.2f}.png'
        ds.image(i).save(path, optimize=True)
        paths.append(path)
    return paths


def _sample_files() -> List[Path]:
    files = sorted(SAMPLES_DIR.glob('*.png'))
    if not files:
        raise FileNotFoundError(f'no sample images in {SAMPLES_DIR}: this install of timm-sknet is incomplete')
    return files


def run_main_job(out_dir: str = 'output/main_job', num_images: int = 128, device: str = 'cpu',
                 seed: int = 0) -> Dict[str, Any]:
    """Load the embedded model, predict the bundled samples, run the attention-vs-scale analysis.

    Writes ``predictions.csv``, ``attention_vs_scale.csv`` and (with matplotlib) ``attention_vs_scale.png``
    to ``out_dir``; prints the numbers and the verdict; returns them.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    verify_embedded_weights()
    model = timm.create_model(EMBEDDED_TAG, pretrained=True).to(device).eval()
    labels = list(model.pretrained_cfg['label_names'])
    transform = create_transform(**resolve_data_config(model=model))
    print(f'{EMBEDDED_TAG}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, '
          f'classes {", ".join(labels)} (weights embedded in the package, sha256 verified)')

    # 1. predictions on the bundled samples; their names carry the true class and object scale
    rows = []
    files = _sample_files()
    batch = torch.stack([transform(Image.open(f).convert('RGB')) for f in files]).to(device)
    with torch.inference_mode():
        probs = model(batch).softmax(-1).cpu()
    print(f'\nPredictions on {len(files)} bundled samples ({SAMPLES_DIR}):')
    for f, p in zip(files, probs):
        top = p.topk(min(3, len(labels)))
        truth = f.stem.split('_')[1]
        rows.append(dict(file=f.name, truth=truth, prediction=labels[top.indices[0]], probability=round(top.values[0].item(), 4),
                         top3=' '.join(f'{labels[i]}:{v:.3f}' for v, i in zip(top.values.tolist(), top.indices.tolist()))))
        print(f'  {f.name:<24} true {truth:<9} -> ' + ', '.join(
            f'{labels[i]} {v:.1%}' for v, i in zip(top.values.tolist(), top.indices.tolist())))
    correct = sum(r['truth'] == r['prediction'] for r in rows)
    print(f'  {correct}/{len(rows)} correct')
    _write_csv(out / 'predictions.csv', rows)

    # 2. the paper's analysis on fresh, centred objects small enough to be enlarged 2x
    ds = SyntheticShapes(num_images, image_size=model.pretrained_cfg['input_size'][-1], seed=seed, split='analysis',
                         num_classes=len(labels), scale_range=ANALYSIS_SCALE_RANGE, center_jitter=0.0)
    images = [ds.image(i) for i in range(len(ds))]
    results = measure_attention_vs_scale(model, images, transform)
    verdict = _verdict(results, SCALE_FACTORS)
    print(f'\nAttention vs object size on {num_images} synthetic objects (scale {ANALYSIS_SCALE_RANGE[0]}-'
          f'{ANALYSIS_SCALE_RANGE[1]} of the image, enlarged by centre crop + resize):')
    print('  mean attention(larger kernel) - attention(smaller kernel)')
    print(f'  {"SK unit":<16}' + ''.join(f'{f"{f}x":>10}' for f in SCALE_FACTORS) + '   change')
    for name, vals in results.items():
        print(f'  {name:<16}' + ''.join(f'{v:>+10.4f}' for v in vals) + f'   {vals[-1] - vals[0]:+.4f}')
    print('\n' + verdict['statement'])
    _write_csv(out / 'attention_vs_scale.csv', [
        dict(unit=n, **{f'diff_{f}x': round(v, 6) for f, v in zip(SCALE_FACTORS, vals)}) for n, vals in results.items()])
    plot = _plot(results, SCALE_FACTORS, out / 'attention_vs_scale.png')
    print(f'\nwrote {out / "predictions.csv"}, {out / "attention_vs_scale.csv"}' +
          (f', {plot}' if plot else ' (no plot: install matplotlib, e.g. pip install "timm-sknet[plot]")'))
    return dict(predictions=rows, sample_accuracy=correct / len(rows), attention=results, **verdict,
                plot=str(plot) if plot else None)


def _write_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Optional[List[str]] = None) -> int:
    import timm_sknet  # noqa: F401  (registers the models)
    parser = argparse.ArgumentParser(prog='python -m timm_sknet.main_job', description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default='output/main_job')
    parser.add_argument('--num-images', type=int, default=128)
    args = parser.parse_args(argv)
    run_main_job(args.out_dir, num_images=args.num_images)
    return 0


if __name__ == '__main__':
    sys.exit(main())
