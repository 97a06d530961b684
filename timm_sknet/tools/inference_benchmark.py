"""Inference speed against every peer a user would otherwise run, in one process, with the same weights.

Peers are timm's own ``skresnext50_32x4d`` (the same network, timm's implementation) run the ways a timm
user can run it: eager (channels_last; bf16 through autocast), ``torch.compile`` with inductor's freezing,
exported to ONNX and run by onnxruntime, and by OpenVINO at f32 and bf16. Ours are ``sknet50`` with the
same weights through every backend and precision of :func:`timm_sknet.inference.optimize`. Each path is
built by the same backend code (timm's model has no BatchNorm fold of its own, so it runs as its user would
run it), checked against the plain model, then timed in rotation with all others (A B C ... A B C ...),
median of ``runs``. The machine's peak is measured in the same run: the best matrix-product rate over a
few shapes, fp32 and bf16, through the BLAS (``torch.mm``) and oneDNN (``mkldnn._linear_pointwise``).

``run_inference_benchmark`` returns everything as a dict, writes JSON and a markdown table, and the
summary says, per precision, our best path against the best peer path.
"""
import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

import timm

from ..file_io import write_text_atomic
from ..inference import BackendUnavailable, machine_info, native_bf16, optimize
from ..models.complexity import count_macs
from .benchmark import time_alternating

__all__ = ['PEER_PATHS', 'OUR_PATHS', 'gemm_peaks', 'markdown_report', 'run_inference_benchmark']

#: (backend, precision) for timm's model and for ours
PEER_PATHS = (('eager', 'fp32'), ('eager', 'bf16'), ('inductor', 'fp32'), ('inductor', 'bf16'),
              ('onnxruntime', 'fp32'), ('openvino', 'fp32'), ('openvino', 'bf16'))
OUR_PATHS = PEER_PATHS + (('openvino', 'int8'),)
GEMM_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (4096, 1024, 1024), (512, 4096, 512))


@dataclass
class PathResult:
    owner: str  # 'timm' or 'sknet'
    backend: str
    precision: str
    batch_size: int
    images_per_s: float
    error: float  # relative to the plain model's largest output, as optimize checks it
    description: str

    @property
    def name(self) -> str:
        return f'{self.owner} {self.backend} {self.precision}'


def _gemm_runner(m: int, n: int, k: int, dtype: torch.dtype, library: str) -> Callable[[], Any]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(n, k, generator=g).to(dtype)
    if library == 'onednn':
        return lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, 'none', [], '')
    bt = b.t().contiguous()
    return lambda: torch.mm(a, bt)


def gemm_peaks(runs: int = 5, shapes: Sequence[Tuple[int, int, int]] = GEMM_SHAPES) -> Dict[str, Any]:
    """Best GFLOP/s over ``shapes`` for fp32 and bf16 through the BLAS and oneDNN (the machine's peak)."""
    rates: Dict[str, float] = {}
    dtypes = {'fp32': torch.float32, 'bf16': torch.bfloat16}
    for precision, dtype in dtypes.items():
        for library in ('blas', 'onednn'):
            for m, n, k in shapes:
                try:
                    run = _gemm_runner(m, n, k, dtype, library)
                    seconds = statistics.median(time_alternating({'mm': run}, runs, 1, torch.device('cpu'))['mm'])
                except RuntimeError:  # a library without this dtype here
                    continue
                rates[f'{precision} {library} {m}x{n}x{k}'] = 2 * m * n * k / seconds / 1e9
    peak = {p: max((v for k, v in rates.items() if k.startswith(p)), default=0.0) for p in dtypes}
    return dict(rates=rates, peak_gflops=peak)


def _build_paths(model: nn.Module, owner: str, paths: Iterable[Tuple[str, str]], size: Sequence[int],
                 calibration: Optional[List[torch.Tensor]], log: Callable[[str], None]) -> Dict[Tuple, Any]:
    built = {}
    for backend, precision in paths:
        if precision == 'bf16' and not native_bf16():
            log(f'  {owner} {backend} {precision}: skipped, no native bf16 on this CPU')
            continue
        start = time.perf_counter()
        try:
            built[(owner, backend, precision)] = optimize(model, backend, precision, input_size=size,
                                                          calibration=calibration)
        except BackendUnavailable as e:
            log(f'  {owner} {backend} {precision}: skipped ({e})')
            continue
        log(f'  {owner} {backend} {precision}: built in {time.perf_counter() - start:.0f}s, '
            f'error {built[(owner, backend, precision)].error:.1e}')
    return built


def _calibration(size: Sequence[int], batches: int = 4, batch: int = 8) -> List[torch.Tensor]:
    """Random normalised images: enough to exercise int8's speed (its accuracy is measured elsewhere)."""
    g = torch.Generator().manual_seed(3)
    return [torch.randn(batch, *size, generator=g) for _ in range(batches)]


def _time_batch(built: Dict[Tuple, Any], batch_size: int, size: Sequence[int], runs: int,
                warmup: int) -> List[PathResult]:
    x = torch.randn(batch_size, *size, generator=torch.Generator().manual_seed(1))
    runners = {key: (lambda m=m: m(x)) for key, m in built.items()}
    times = time_alternating(runners, runs, warmup, torch.device('cpu'))
    return [PathResult(owner, backend, precision, batch_size, batch_size / statistics.median(times[key]),
                       built[key].error, built[key].description)
            for key in built for owner, backend, precision in [key]]


def _best(results: List[PathResult], owner: str, precision: str, batch_size: int) -> Optional[PathResult]:
    candidates = [r for r in results if (r.owner, r.precision, r.batch_size) == (owner, precision, batch_size)]
    return max(candidates, key=lambda r: r.images_per_s, default=None)


def summarize(results: List[PathResult], peaks: Dict[str, float], gflop: float) -> List[Dict[str, Any]]:
    """Per precision and batch size: our best path, the best peer path, the ratio, and the share of peak."""
    rows = []
    for precision in ('fp32', 'bf16', 'int8'):
        for batch_size in sorted({r.batch_size for r in results}):
            ours, peer = _best(results, 'sknet', precision, batch_size), _best(results, 'timm', precision, batch_size)
            if ours is None:
                continue
            peak = peaks.get(precision)
            rows.append(dict(
                precision=precision, batch_size=batch_size, ours=ours.name, ours_images_per_s=ours.images_per_s,
                peer=peer.name if peer else None, peer_images_per_s=peer.images_per_s if peer else None,
                ratio=ours.images_per_s / peer.images_per_s if peer else None,
                share_of_peak=ours.images_per_s * gflop / peak if peak else None))
    return rows


def run_inference_benchmark(
        *,
        our_model: str = 'sknet50',
        timm_model: str = 'skresnext50_32x4d',
        image_size: int = 224,
        batch_sizes: Sequence[int] = (1, 8),
        runs: int = 9,
        warmup: int = 2,
        paths: Optional[Sequence[Tuple[str, str]]] = None,
        peers: bool = True,
        gemm_shapes: Sequence[Tuple[int, int, int]] = GEMM_SHAPES,
        json_path=None,
        markdown_path=None,
        log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Build every path, time them in rotation, and report (see the module docstring).

    ``paths`` restricts our side (and the peers) to some (backend, precision) pairs; ``peers=False`` times ours
    only; ``gemm_shapes`` are the matrix products the peak is measured with.
    """
    size = (3, image_size, image_size)
    # four compiled ResNets share ResNet.forward's code object, and each batch size is a specialisation:
    # more than dynamo's default limit of 8 in one process, which a single user model never reaches
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    torch.manual_seed(0)
    reference = timm.create_model(timm_model).eval()
    ours = timm.create_model(our_model).eval()
    ours.load_state_dict(reference.state_dict())  # the same weights: only the implementation differs
    gflop = 2 * count_macs(ours, size) / 1e9
    info = machine_info()
    log(f'{info.describe()}; {torch.get_num_threads()} threads; {our_model} {gflop:.2f} GFLOP/image at {image_size}')
    ours_wanted = [p for p in OUR_PATHS if paths is None or p in paths]
    peers_wanted = [p for p in PEER_PATHS if peers and (paths is None or p in paths)]
    calibration = _calibration(size) if ('openvino', 'int8') in ours_wanted else None
    built = {**_build_paths(ours, 'sknet', ours_wanted, size, calibration, log),
             **_build_paths(reference, 'timm', peers_wanted, size, None, log)}
    peaks = gemm_peaks(shapes=gemm_shapes)
    log('peak GFLOP/s: ' + ', '.join(f'{k} {v:.0f}' for k, v in peaks['peak_gflops'].items()))
    results = [r for b in batch_sizes for r in _time_batch(built, b, size, runs, warmup)]
    out = dict(
        our_model=our_model, timm_model=timm_model, image_size=image_size, gflop_per_image=gflop,
        machine=info.describe(), cpu_flags=sorted(info.flags), threads=torch.get_num_threads(),
        torch=torch.__version__, timm=timm.__version__, runs=runs, gemm=peaks,
        results=[dict(asdict(r), name=r.name) for r in results],
        summary=summarize(results, peaks['peak_gflops'], gflop))
    if json_path:
        write_text_atomic(json_path, json.dumps(out, indent=2) + '\n')
    if markdown_path:
        write_text_atomic(markdown_path, markdown_report(out) + '\n')
    return out


def _fmt(value: Optional[float], pattern: str = '{:.1f}') -> str:
    return pattern.format(value) if value is not None else '-'


def markdown_report(result: Dict[str, Any]) -> str:
    """The machine, a table of every path at every batch size, and the per-precision summary."""
    batch_sizes = sorted({r['batch_size'] for r in result['results']})
    names = list(dict.fromkeys(r['name'] for r in result['results']))
    ips = {(r['name'], r['batch_size']): r['images_per_s'] for r in result['results']}
    peak = result['gemm']['peak_gflops']
    lines = [
        f'{result["our_model"]} vs timm {result["timm_model"]}, same weights, {result["image_size"]} px, '
        f'{result["threads"]} threads, median of {result["runs"]}, img/s; torch {result["torch"]}, '
        f'timm {result["timm"]}. Machine: {result["machine"]}. Peak (best GEMM): fp32 {peak["fp32"]:.0f} GFLOP/s, '
        f'bf16 {peak["bf16"]:.0f} GFLOP/s; {result["gflop_per_image"]:.2f} GFLOP/image.',
        '',
        '| path | ' + ' | '.join(f'batch {b}' for b in batch_sizes) + ' |',
        '|---|' + '---|' * len(batch_sizes),
    ]
    lines += [f'| {n} | ' + ' | '.join(_fmt(ips.get((n, b))) for b in batch_sizes) + ' |' for n in names]
    lines += ['', '| precision | batch | our best | img/s | best peer | img/s | ratio | share of peak |',
              '|---|---|---|---|---|---|---|---|']
    for s in result['summary']:
        lines.append(f'| {s["precision"]} | {s["batch_size"]} | {s["ours"]} | {s["ours_images_per_s"]:.1f} | '
                     f'{s["peer"] or "-"} | {_fmt(s["peer_images_per_s"])} | {_fmt(s["ratio"], "{:.2f}x")} | '
                     f'{_fmt(s["share_of_peak"] and 100 * s["share_of_peak"], "{:.0f} %")} |')
    return '\n'.join(lines)
