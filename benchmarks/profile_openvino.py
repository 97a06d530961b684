#!/usr/bin/env python
"""Where OpenVINO spends the time: per-node times (PERF_COUNT) of sknet50 and timm's skresnext50_32x4d, by op type.

    python benchmarks/profile_openvino.py                       # bf16, batch 1, both models
    python benchmarks/profile_openvino.py --precision fp32 --batch-size 8

Both models are exported as `optimize(..., backend='openvino')` exports them (same random weights scheme) and
compiled with the latency hint on all threads; the node times of 5 inferences are summed by (op type, kernel),
in alternating rounds of which each model's least disturbed is kept (the machine is shared), and printed as ms
per inference and share of the graph's total. The README's "what limits it" paragraph quotes it.
"""
import argparse
import collections
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm  # noqa: E402

import timm_sknet  # noqa: E402,F401  (registers the models)
from timm_sknet.inference.backends import openvino_model  # noqa: E402


def compile_profiled(name: str, precision: str):
    import openvino as ov

    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    ov_model, _ = openvino_model(model, precision, (3, 224, 224))
    compiled = ov.Core().compile_model(ov_model, 'CPU', {
        'INFERENCE_PRECISION_HINT': 'f32' if precision == 'fp32' else precision, 'PERFORMANCE_HINT': 'LATENCY',
        'INFERENCE_NUM_THREADS': torch.get_num_threads(), 'PERF_COUNT': True})
    return compiled.create_infer_request()


def profile(request, batch_size: int, runs: int = 5) -> collections.Counter:
    x = np.random.default_rng(0).standard_normal((batch_size, 3, 224, 224), dtype=np.float32)
    for _ in range(3):
        request.infer({0: x})
    times = collections.Counter()
    for _ in range(runs):
        request.infer({0: x})
        for node in request.profiling_info:
            times[(node.node_type, node.exec_type)] += node.real_time.total_seconds() * 1e3 / runs
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--precision', choices=('fp32', 'bf16'), default='bf16')
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--top', type=int, default=12, help='op types to list per model')
    p.add_argument('--rounds', type=int, default=5, help='alternating rounds; the fastest of each model is shown')
    args = p.parse_args(argv)
    names = ('sknet50', 'skresnext50_32x4d')
    requests = {name: compile_profiled(name, args.precision) for name in names}
    best = {}
    for _ in range(args.rounds):  # alternating, the least disturbed round of each kept (a shared machine)
        for name in names:
            times = profile(requests[name], args.batch_size)
            if name not in best or sum(times.values()) < sum(best[name].values()):
                best[name] = times
    for name in names:
        times = best[name]
        total = sum(times.values())
        conv = sum(ms for (op, _), ms in times.items() if 'Convolution' in op)
        print(f'\n{name}, {args.precision}, batch {args.batch_size}: {total:.1f} ms per inference in nodes, '
              f'convolutions {conv:.1f} ms ({conv / total:.0%})')
        for (op, kernel), ms in times.most_common(args.top):
            print(f'  {ms:7.2f} ms {ms / total:6.1%}  {op:20s} {kernel}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
