#!/usr/bin/env python
"""sknet50 (fused) vs timm's skresnext50_32x4d, same weights, alternating runs, in one process.

    python benchmarks/bench_vs_timm.py                  # full run (minutes on 2 CPU cores)
    python benchmarks/bench_vs_timm.py --quick          # smoke test, seconds
    python benchmarks/bench_vs_timm.py --device cuda

Writes benchmarks/results/bench_vs_timm.{json,md} unless --out says otherwise.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from timm_sknet.tools.benchmark import run_benchmark  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='tiny smoke test: proves it runs, measures nothing')
    p.add_argument('--device', default='cpu')
    p.add_argument('--runs', type=int, default=7, help='timed runs per model and case (median reported)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    p.add_argument('--image-size', type=int, default=224)
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory runs')
    p.add_argument('--out', default=str(Path(__file__).resolve().parent / 'results' / 'bench_vs_timm'),
                   help='output path without extension (.json and .md are written)')
    args = p.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run_benchmark(
        device=args.device, runs=args.runs, threads=args.threads, image_size=args.image_size,
        quick=args.quick, memory=not args.no_memory,
        json_path=out.with_suffix('.json'), markdown_path=out.with_suffix('.md'))
    from timm_sknet.tools.benchmark import markdown_table
    print(markdown_table(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
