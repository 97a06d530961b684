#!/usr/bin/env python
"""``optimize(model, backend='auto')`` (and eager fp32) of two revisions of this repository, side by side here.

    python benchmarks/compare_revisions.py a6ca8d3 HEAD       # sknet50: optimize(auto) at fp32 / bf16 / int8 and
                                                              # eager fp32, batch 1 and 8

Each revision is checked out into a temporary git worktree and measured in its own processes (two versions of one
package cannot share a process), alternately A B A B, so that the machine's noise hits both; per revision and
path the median over all its runs is reported, with the ratio new / old. Only ``optimize``'s public API is used,
which both revisions must have.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEASURE = r'''
import json, sys, time, torch, timm, timm_sknet
from timm_sknet.inference import native_bf16, optimize
torch.manual_seed(0)
model = timm.create_model('sknet50').eval()
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
calibration = [torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(3))] * 4
times = {}
for path in sys.argv[1].split(','):
    backend, precision = path.split(':')
    if precision == 'bf16' and not native_bf16():
        continue
    fast = optimize(model, backend, precision, calibration=calibration if precision == 'int8' else None)
    for batch in (1, 8):
        x = torch.randn(batch, 3, 224, 224)
        fast(x), fast(x)
        runs = []
        for _ in range(int(sys.argv[2])):
            start = time.perf_counter()
            fast(x)
            runs.append(time.perf_counter() - start)
        times[f'{backend} {precision} b{batch}'] = dict(backend=fast.backend, runs=runs)
print(json.dumps(times))
'''


def measure(worktree: Path, paths: str, runs: int) -> dict:
    env = {**os.environ, 'PYTHONPATH': str(worktree)}  # this revision's timm_sknet first
    proc = subprocess.run([sys.executable, '-c', MEASURE, paths, str(runs)], env=env, cwd=worktree,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('old')
    p.add_argument('new')
    p.add_argument('--paths', default='auto:fp32,auto:bf16,auto:int8,eager:fp32', help='backend:precision, ...')
    p.add_argument('--rounds', type=int, default=2, help='processes per revision, alternating')
    p.add_argument('--runs', type=int, default=9, help='timed calls per path and process')
    args = p.parse_args(argv)
    results = {args.old: {}, args.new: {}}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {rev: Path(tmp) / f'rev{i}' for i, rev in enumerate((args.old, args.new))}
        for rev, tree in trees.items():
            subprocess.run(['git', '-C', str(REPO), 'worktree', 'add', '--detach', '-q', str(tree), rev], check=True)
        try:
            for _ in range(args.rounds):
                for rev, tree in trees.items():
                    for path, measured in measure(tree, args.paths, args.runs).items():
                        entry = results[rev].setdefault(path, dict(backend=measured['backend'], runs=[]))
                        entry['runs'] += measured['runs']
        finally:
            for tree in trees.values():
                subprocess.run(['git', '-C', str(REPO), 'worktree', 'remove', '--force', str(tree)], check=False)
    old, new = results[args.old], results[args.new]
    print(f'| path | {args.old} img/s | backend | {args.new} img/s | backend | new / old |')
    print('|---|---|---|---|---|---|')
    for path in (k for k in new if k in old):
        batch = int(path.rsplit(' b', 1)[1])
        rate_old, rate_new = (batch / statistics.median(r[path]['runs']) for r in (old, new))
        print(f"| {path} | {rate_old:.1f} | {old[path]['backend']} | {rate_new:.1f} | {new[path]['backend']} "
              f'| {rate_new / rate_old:.2f}x |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
