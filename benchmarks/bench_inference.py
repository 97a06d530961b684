#!/usr/bin/env python
"""sknet50 through every backend and precision vs timm's skresnext50_32x4d run the same ways, in one process.

    python benchmarks/bench_inference.py                      # full run: every path, batch 1 and 8 (minutes)
    python benchmarks/bench_inference.py --batch-sizes 1      # one batch size
    python benchmarks/bench_inference.py --paths openvino:bf16 openvino:int8

Writes benchmarks/results/inference_vs_peers.{json,md} unless --out says otherwise. The same benchmark is
`timm-sknet bench`.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from timm_sknet.tools.inference_benchmark import markdown_report, run_inference_benchmark  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    p.add_argument('--runs', type=int, default=9, help='timed runs per path (median reported)')
    p.add_argument('--image-size', type=int, default=224)
    p.add_argument('--paths', nargs='*', default=None, metavar='BACKEND:PRECISION',
                   help='only these paths (default: all), e.g. openvino:bf16 inductor:fp32')
    p.add_argument('--out', default=str(Path(__file__).resolve().parent / 'results' / 'inference_vs_peers'),
                   help='output path without extension (.json and .md are written)')
    args = p.parse_args(argv)
    paths = [tuple(s.split(':')) for s in args.paths] if args.paths else None
    out = Path(args.out)
    result = run_inference_benchmark(image_size=args.image_size, batch_sizes=tuple(args.batch_sizes), runs=args.runs,
                                     paths=paths, json_path=out.with_suffix('.json'), markdown_path=out.with_suffix('.md'))
    print(markdown_report(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
