"""Benchmark SKNet against timm's own SK implementation, with the same weights, in one process.

timm's ``skresnext50_32x4d`` and our ``sknet50`` are the same network (the weights load unchanged), so
the comparison is of implementations only. Runs alternate between the models (A B A B ...) so that
machine noise hits both alike; the figure reported is the median over runs. Our eval model is the
fused one (``timm.utils.reparameterize_model``), timm's is timm's as it is.

Also reported:

* **roofline share**: images/s divided by what the machine's matrix rate allows, measured in the same run
  as the median rate of a 2048^3 fp32 matmul (``sgemm``) over the model's FLOPs per image
  (2 x MACs counted by ``torch.utils.flop_counter``; 8.93 GFLOP for SKNet-50 at 224);
* **peak memory**: the peak of live tensor bytes (parameters, buffers, gradients, activations,
  temporaries) during one run, tracked per tensor by ``torch.distributed._tools.MemTracker``
  (``torch.cuda.max_memory_allocated`` on CUDA). It is deterministic, unlike process RSS.

Used by ``benchmarks/bench_vs_timm.py`` and the CLI; ``run_benchmark(quick=True)`` is a smoke test.
"""
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

import timm

from ..file_io import write_text_atomic
from ..inference import fuse_model
from ..models.complexity import count_macs

__all__ = ['BenchCase', 'DEFAULT_CASES', 'QUICK_CASES', 'markdown_table', 'run_benchmark', 'sgemm_gflops']


@dataclass(frozen=True)
class BenchCase:
    """One configuration: ``mode`` is ``'eval'`` (forward under inference_mode) or ``'train'`` (forward,
    cross-entropy, backward, SGD step)."""
    mode: str
    batch_size: int
    channels_last: bool

    @property
    def name(self) -> str:
        layout = 'channels_last' if self.channels_last else 'contiguous'
        return f'{self.mode} b{self.batch_size} {layout}'


DEFAULT_CASES = (
    BenchCase('eval', 1, False), BenchCase('eval', 1, True),
    BenchCase('eval', 8, False), BenchCase('eval', 8, True),
    BenchCase('train', 8, False), BenchCase('train', 8, True),
)
QUICK_CASES = (BenchCase('eval', 2, True), BenchCase('train', 2, True))


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _sgemm_runner(device: torch.device, n: int = 2048) -> Callable[[], Any]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    return lambda: torch.mm(a, b)


def sgemm_gflops(device: torch.device = torch.device('cpu'), n: int = 2048, runs: int = 5) -> float:
    """Median fp32 matmul rate (GFLOP/s) of an n x n x n product on ``device``."""
    run = _sgemm_runner(device, n)
    run()
    times = []
    for _ in range(runs):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def _gflop_per_image(model: nn.Module, image_size: int) -> float:
    """Forward FLOPs per image: 2 x the multiply-adds counted by ``models.complexity.count_macs``."""
    return 2 * count_macs(model, (3, image_size, image_size)) / 1e9


def _peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> Optional[float]:
    """Peak live tensor memory (MiB) during ``fn()``: everything allocated before it counts too."""
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:  # builds without torch.distributed
        return None
    tracker = MemTracker()
    with tracker:
        fn()
    peak = tracker.get_tracker_snapshot('peak')
    return sum(d['Total'] for d in peak.values()) / 2 ** 20


def _runner(model: nn.Module, case: BenchCase, x: torch.Tensor) -> Callable[[], Any]:
    if case.mode == 'eval':
        def run():
            with torch.inference_mode():
                return model(x)
        return run
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    target = torch.randint(0, 1000, (x.shape[0],), generator=torch.Generator().manual_seed(0)).to(x.device)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        loss = loss_fn(model(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def _prepare(model: nn.Module, case: BenchCase, device: torch.device) -> nn.Module:
    model = model.to(device)
    model.train(case.mode == 'train')
    if case.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@dataclass
class CaseResult:
    case: str
    images_per_s: Dict[str, float]
    ratio: float
    sgemm_gflops: float
    roofline_share: Dict[str, float]
    peak_memory_mb: Dict[str, Optional[float]]
    memory_ratio: Optional[float]
    runs: int
    run_seconds: Dict[str, List[float]] = field(repr=False)


def time_alternating(runners: Dict[str, Callable[[], Any]], runs: int, warmup: int,
                     device: torch.device) -> Dict[str, List[float]]:
    """Seconds per call of each runner, called in rotation (A B C A B C ...) so that noise hits all alike."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: Dict[str, List[float]] = {k: [] for k in runners}
    for _ in range(runs):
        for k, run in runners.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times[k].append(time.perf_counter() - start)
    return times


def _same_weights_pair(timm_model: str, our_model: str):
    """timm's model and ours with identical (random) weights: only the implementation differs."""
    torch.manual_seed(0)
    reference = timm.create_model(timm_model).eval()
    ours = timm.create_model(our_model).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _run_case(case: BenchCase, reference: nn.Module, ours: nn.Module, fused: nn.Module, *, image_size: int,
              runs: int, warmup: int, gflop: float, memory: bool, dev: torch.device) -> CaseResult:
    if case.mode not in ('eval', 'train'):
        raise ValueError(f"BenchCase.mode must be 'eval' or 'train', got {case.mode!r}")
    models = {'timm': _prepare(reference, case, dev), 'sknet': _prepare(fused if case.mode == 'eval' else ours, case, dev)}
    x = torch.randn(case.batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(1)).to(dev)
    if case.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    runners = {k: _runner(m, case, x) for k, m in models.items()}
    # the sgemm reference is timed in the same rotation, so the roofline sees the same noise
    times = time_alternating({**runners, 'sgemm': _sgemm_runner(dev)}, runs, warmup, dev)
    case_sgemm = 2 * 2048 ** 3 / statistics.median(times.pop('sgemm')) / 1e9
    ips = {k: case.batch_size / statistics.median(v) for k, v in times.items()}
    mem = {k: (_peak_memory_mb(run, dev) if memory else None) for k, run in runners.items()}
    mem_ratio = mem['sknet'] / mem['timm'] if mem['sknet'] and mem['timm'] else None
    roof = case_sgemm / gflop / (3 if case.mode == 'train' else 1)  # a training step is ~3x the FLOPs
    for m in models.values():
        m.to(memory_format=torch.contiguous_format)
    return CaseResult(
        case=case.name, images_per_s=ips, ratio=ips['sknet'] / ips['timm'], sgemm_gflops=case_sgemm,
        roofline_share={k: v / roof for k, v in ips.items()}, peak_memory_mb=mem, memory_ratio=mem_ratio,
        runs=runs, run_seconds=times)


def run_benchmark(
        cases: Optional[Sequence[BenchCase]] = None,
        *,
        timm_model: str = 'skresnext50_32x4d',
        our_model: str = 'sknet50',
        image_size: int = 224,
        runs: int = 7,
        warmup: int = 3,
        device: str = 'cpu',
        threads: Optional[int] = None,
        quick: bool = False,
        memory: bool = True,
        json_path: Optional[os.PathLike] = None,
        markdown_path: Optional[os.PathLike] = None,
        log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Run the comparison and return the results as a dict (also written as JSON / markdown if asked).

    ``quick=True`` is a smoke test: skresnet18 vs sknet18 unless other models are named, 64x64 images,
    two short cases, three runs. Its numbers prove that the benchmark works, not how fast anything is.
    """
    if quick:  # the small pair of the family: same comparison, seconds instead of minutes
        cases = cases or QUICK_CASES
        if (timm_model, our_model) == ('skresnext50_32x4d', 'sknet50'):
            timm_model, our_model = 'skresnet18', 'sknet18'
        image_size, runs, warmup = min(image_size, 64), min(runs, 3), 1
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    reference, ours = _same_weights_pair(timm_model, our_model)
    fused = fuse_model(ours)
    gflop = _gflop_per_image(ours, image_size)
    sgemm = sgemm_gflops(dev)
    log(f'sgemm 2048^3: {sgemm:.1f} GFLOP/s; {our_model}: {gflop:.2f} GFLOP/image at {image_size}; '
        f'roofline {sgemm / gflop:.2f} images/s; threads {torch.get_num_threads()}')
    results = []
    for case in list(cases or DEFAULT_CASES):
        res = _run_case(case, reference, ours, fused, image_size=image_size, runs=runs, warmup=min(warmup, 3),
                        gflop=gflop, memory=memory, dev=dev)
        results.append(res)
        ips, mem_ratio = res.images_per_s, res.memory_ratio
        log(f'{case.name:>26}: timm {ips["timm"]:7.2f} img/s, sknet {ips["sknet"]:7.2f} img/s, '
            f'x{res.ratio:.2f}, roofline {res.roofline_share["sknet"]:.0%} (sgemm {res.sgemm_gflops:.0f} GFLOP/s)'
            + (f', memory x{mem_ratio:.2f}' if mem_ratio else ''))
        if case.mode == 'train':  # training updated the weights: restore the shared starting point
            ours.load_state_dict(reference.state_dict())
    out = {
        'timm_model': timm_model, 'our_model': our_model, 'image_size': image_size, 'device': str(dev),
        'device_name': _device_name(dev), 'threads': torch.get_num_threads(), 'torch': torch.__version__,
        'timm': timm.__version__, 'sgemm_gflops': sgemm, 'gflop_per_image': gflop, 'quick': quick,
        'memory_method': ('torch.cuda.max_memory_allocated' if dev.type == 'cuda' else
                          'peak live tensor bytes, torch.distributed._tools.MemTracker'),
        'results': [asdict(r) for r in results],
    }
    if json_path:
        write_text_atomic(json_path, json.dumps(out, indent=2) + '\n')
    if markdown_path:
        write_text_atomic(markdown_path, markdown_table(out) + '\n')
    return out


def _device_name(dev: torch.device) -> str:
    if dev.type == 'cuda':
        return torch.cuda.get_device_name(dev)
    return f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores'


def _fmt_mb(value: Optional[float]) -> str:
    return f'{value:.0f}' if value is not None else '-'


def markdown_table(result: Dict[str, Any]) -> str:
    """The results of :func:`run_benchmark` as a markdown table with a one-line header."""
    lines = [
        f'{result["our_model"]} (fused for eval) vs timm {result["timm_model"]}, same weights, '
        f'{result["image_size"]}x{result["image_size"]}, fp32, {result["device_name"]}, '
        f'{result["threads"]} threads, torch {result["torch"]}, timm {result["timm"]}; '
        f'sgemm {result["sgemm_gflops"]:.0f} GFLOP/s, {result["gflop_per_image"]:.2f} GFLOP/image.',
        '',
        '| case | timm img/s | sknet img/s | speed-up | sknet roofline share (sgemm GFLOP/s) | timm peak MiB '
        '| sknet peak MiB | memory ratio |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for r in result['results']:
        mem = r['peak_memory_mb']
        ratio = f'{r["memory_ratio"]:.2f}' if r['memory_ratio'] else '-'
        lines.append(
            f'| {r["case"]} | {r["images_per_s"]["timm"]:.2f} | {r["images_per_s"]["sknet"]:.2f} '
            f'| {r["ratio"]:.2f}x | {r["roofline_share"]["sknet"]:.0%} ({r["sgemm_gflops"]:.0f}) '
            f'| {_fmt_mb(mem["timm"])} | {_fmt_mb(mem["sknet"])} | {ratio} |')
    return '\n'.join(lines)
