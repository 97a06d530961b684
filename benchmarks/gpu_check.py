"""The GPU path of bulk inference, where a CUDA GPU is: outputs against the CPU, then throughput end to end.

    python benchmarks/gpu_check.py            # on a machine with CUDA; prints a markdown report

1. The same images through ``BatchPredictor(device='cuda')`` and ``device='cpu'`` (the embedded
   sknet_tiny.synthetic weights, so no download): fp32 logits within 1e-3 of the largest, bf16 top-1 agreement.
2. ``timm-sknet predict --device cuda`` over a folder of generated 12-megapixel JPEGs with sknet50 (random
   weights: speed does not depend on them), images/s, against ``--device cpu`` on a few of them.

It writes nothing outside a temporary folder. Results go in benchmarks/results/gpu_check.md by hand, with the
machine this prints.
"""
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import timm_sknet  # noqa: F401  (registers the models)
from timm_sknet.batch.predictor import BatchPredictor
from timm_sknet.data.images import SAMPLES_DIR
from timm_sknet.inference import machine_info


def agreement() -> None:
    paths = sorted(SAMPLES_DIR.glob('*.png'))
    cpu = BatchPredictor('sknet_tiny.synthetic', pretrained=True, backend='eager', device='cpu', topk=1)
    images = torch.stack([cpu.transform(Image.open(p).convert('RGB')) for p in paths])
    rows_cpu, _ = cpu.predict(paths, images)
    for precision in ('fp32', 'bf16'):
        gpu = BatchPredictor('sknet_tiny.synthetic', pretrained=True, backend='eager', precision=precision,
                             device='cuda', topk=1)
        rows_gpu, _ = gpu.predict(paths, images.pin_memory())
        same = sum(a['index_1'] == b['index_1'] for a, b in zip(rows_cpu, rows_gpu))
        diff = max(abs(a['probability_1'] - b['probability_1']) for a, b in zip(rows_cpu, rows_gpu))
        print(f'| {precision} | {same}/{len(paths)} same top-1 | max top-1 probability difference {diff:.2g} |')


def throughput(images: int = 200) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for i in range(images):  # 4032 x 3024, a phone camera's size; noise compresses badly, as photos do not
            pixels = rng.integers(0, 256, (3024 // 8, 4032 // 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize((4032, 3024)).save(Path(tmp) / f'{i:04d}.jpg', quality=90)
        for device, n in (('cuda', images), ('cpu', 16)):
            files = sorted(Path(tmp).glob('*.jpg'))[:n]
            start = time.perf_counter()
            subprocess.run([sys.executable, '-m', 'timm_sknet', 'predict', *map(str, files), '--model', 'sknet50',
                            '--random-weights', '--device', device, '--batch-size', '32', '--output',
                            str(Path(tmp) / f'{device}.csv')], check=True, capture_output=True)
            print(f'| predict --device {device} | {n} images | {n / (time.perf_counter() - start):.1f} images/s |')


if __name__ == '__main__':
    if not torch.cuda.is_available():
        sys.exit('gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine')
    print(f'Machine: {machine_info().describe()}; torch {torch.__version__}\n')
    print('| precision | top-1 | probabilities |\n|---|---|---|')
    agreement()
    print('\n| run | images | throughput |\n|---|---|---|')
    throughput()
