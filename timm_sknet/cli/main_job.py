"""The package's main job, offline: the embedded SKNet predicts the bundled samples, then the paper's
attention-vs-object-scale analysis (:mod:`timm_sknet.analysis.scale`) runs on it.

Everything it needs is package data (``sknet_tiny.synthetic`` weights, sample PNGs) or generated on the
spot (the synthetic shapes), so it runs on a fresh machine with no network. It prints what this model
shows, whichever way it goes.
"""
import csv
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

import timm
from timm.data import create_transform, resolve_data_config

from ..analysis.scale import ANALYSIS_SCALE_RANGE, DEFAULT_SCALES, ScaleAnalysis, centred_shapes, run_scale_analysis
from ..data.images import SAMPLES_DIR, load_image
from ..file_io import atomic_file
from ..hub.embedded import EMBEDDED_TAG, verify_embedded_weights

__all__ = ['run_main_job']


def _sample_files() -> List[Path]:
    files = sorted(SAMPLES_DIR.glob('*.png'))
    if not files:
        raise FileNotFoundError(f'no sample images in {SAMPLES_DIR}: this install of timm-sknet is incomplete')
    return files


def predict_samples(model: nn.Module, labels: List[str], device: str = 'cpu') -> List[Dict[str, Any]]:
    """Top-3 predictions of ``model`` on the bundled samples, printed and returned one row per image."""
    transform = create_transform(**resolve_data_config(model=model))
    files = _sample_files()
    batch = torch.stack([transform(load_image(f)) for f in files]).to(device)
    with torch.inference_mode():
        probs = model(batch).softmax(-1).cpu()
    print(f'\nPredictions on {len(files)} bundled samples ({SAMPLES_DIR}):')
    rows = []
    for f, p in zip(files, probs):
        top = p.topk(min(3, len(labels)))
        pairs = list(zip(top.values.tolist(), top.indices.tolist()))
        truth = f.stem.split('_')[1]
        rows.append(dict(file=f.name, truth=truth, prediction=labels[pairs[0][1]], probability=round(pairs[0][0], 4),
                         top3=' '.join(f'{labels[i]}:{v:.3f}' for v, i in pairs)))
        print(f'  {f.name:<24} true {truth:<9} -> ' + ', '.join(f'{labels[i]} {v:.1%}' for v, i in pairs))
    correct = sum(r['truth'] == r['prediction'] for r in rows)
    print(f'  {correct}/{len(rows)} correct')
    return rows


def analyse_scales(model: nn.Module, num_images: int, seed: int) -> ScaleAnalysis:
    """The paper's analysis on fresh, centred synthetic objects small enough to be enlarged 2x."""
    cfg = getattr(model, 'pretrained_cfg')  # timm's, set when the model was built
    labels = cfg['label_names']
    images = centred_shapes(num_images, image_size=cfg['input_size'][-1], seed=seed,
                            num_classes=len(labels))
    analysis = run_scale_analysis(model, images, DEFAULT_SCALES, batch_size=64)
    analysis.model_name = EMBEDDED_TAG
    lo, hi = ANALYSIS_SCALE_RANGE
    print(f'\nAttention vs object size on {num_images} synthetic objects (scale {lo}-{hi} of the image, '
          f'enlarged by centre crop + resize): mean attention(larger kernel) - attention(smaller kernel)')
    print(analysis.table())
    return analysis


def _save_plot(analysis: ScaleAnalysis, path: Path) -> Optional[Path]:
    try:
        return analysis.save_plot(path)
    except ModuleNotFoundError:
        return None


def run_main_job(out_dir: str = 'output/main_job', num_images: int = 128, device: str = 'cpu',
                 seed: int = 0) -> Dict[str, Any]:
    """Load the embedded model, predict the bundled samples, run the attention-vs-scale analysis.

    Writes ``predictions.csv``, ``attention_vs_scale.csv`` and (with matplotlib) ``attention_vs_scale.png``
    to ``out_dir``; prints the numbers and the verdict; returns them.
    """
    out = Path(out_dir)
    verify_embedded_weights()
    model = timm.create_model(EMBEDDED_TAG, pretrained=True).to(device).eval()
    labels = list(getattr(model, 'pretrained_cfg')['label_names'])
    print(f'{EMBEDDED_TAG}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, '
          f'classes {", ".join(labels)} (weights embedded in the package, sha256 verified)')
    rows = predict_samples(model, labels, device)
    _write_csv(out / 'predictions.csv', rows)
    analysis = analyse_scales(model, num_images, seed)
    verdict = analysis.verdict()
    print('\n' + verdict['statement'])
    analysis.write_csv(out / 'attention_vs_scale.csv')
    plot = _save_plot(analysis, out / 'attention_vs_scale.png')
    print(f'\nwrote {out / "predictions.csv"}, {out / "attention_vs_scale.csv"}' +
          (f', {plot}' if plot else ' (no plot: install matplotlib, e.g. pip install "timm-sknet[plot]")'))
    correct = sum(r['truth'] == r['prediction'] for r in rows)
    return dict(predictions=rows, sample_accuracy=correct / len(rows), attention=analysis.mean_diffs(),
                **verdict, plot=str(plot) if plot else None)


def _write_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
    with atomic_file(path) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
