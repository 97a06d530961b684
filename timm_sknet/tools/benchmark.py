"""Benchmarks of the sknets against timm's own SK implementation with the same weights, on this machine.

One module and one runner family, as timm's ``benchmark.py``: a :class:`BenchmarkRunner` holds the pair (timm's
model and ours with identical weights, so only the implementation differs), the machine's description and peak,
and the timing loop; each subclass measures one thing and returns a :class:`Report`, which :func:`write_report`
writes as JSON and markdown.

* :class:`InferenceRunner` (``inference``): every backend and precision of ``optimize`` for both models (timm's
  model run as its users can run it: it has no BatchNorm fold of its own), the peer comparison;
* :class:`EagerRunner` (``eager``): eager inference (folded) and training steps with their peak memory;
* :class:`BackboneRunner` (``backbone``): ``features_only`` at 640 px as detectors run it: eager, plain and folded,
  fp32 and under bf16 autocast, in both memory layouts;
* :class:`ConcurrencyRunner` (``concurrency``): one optimized model called from 1, 2 and 4 threads at once, per
  backend (ours only: the question is how a runtime shares the cores, not ours against timm's);
* :func:`int8_accuracy` (``int8-accuracy``): what int8 costs in accuracy, where that can be measured offline;
* :class:`ServeRunner` (``serve``): the HTTP service under concurrent clients, latency p50 / p99 and throughput,
  for each way of sharing the cores between worker processes, concurrent calls and runtime threads.

Timed calls alternate between everything measured (A B C A B C ...) so that the machine's noise hits all alike;
the figure is the median. The peak is the best matrix-product rate (``torch.mm``) of a few shapes, per dtype,
measured in the same run. ``timm-sknet bench <runner>`` runs one; ``benchmarks/run.sh`` runs them all into
``benchmarks/results/``.
"""
import contextlib
import copy
import functools
import io
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, Hashable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import torch
from torch import nn

import timm
from timm.utils import reparameterize_model

from ..file_io import write_text_atomic
from ..inference import BackendUnavailable, fuse_model, machine_info, native_bf16, optimize
from ..models.complexity import count_macs

__all__ = ['BackboneRunner', 'BenchmarkRunner', 'ConcurrencyRunner', 'EagerRunner', 'InferenceRunner', 'RUNNERS',
           'Report', 'ServeRunner', 'concurrent_rate', 'gemm_peaks', 'int8_accuracy', 'Load', 'load_clients', 'markdown',
           'serving_process', 'time_alternating', 'write_report']
#: what a timed runner is called by (a name, or a (path, variant) key)
K = TypeVar('K', bound=Hashable)

GEMM_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (4096, 1024, 1024), (512, 4096, 512))
#: (backend, precision) run for both models, and for ours only
PEER_PATHS = (('eager', 'fp32'), ('eager', 'bf16'), ('inductor', 'fp32'), ('inductor', 'bf16'),
              ('onnxruntime', 'fp32'), ('openvino', 'fp32'), ('openvino', 'bf16'))
OUR_PATHS = PEER_PATHS + (('openvino', 'int8'),)
QUICK_PAIR = ('sknet18', 'skresnet18')


@dataclass
class Report:
    """What a runner measured: a title, the machine, and tables (rows of equal keys), written by :func:`write_report`."""
    title: str
    machine: Dict[str, Any]
    tables: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)


def _cell(value: Any) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.0f}' if abs(value) >= 100 else f'{value:.1f}' if abs(value) >= 10 else f'{value:.2f}'
    return str(value)


def markdown(report: Report) -> str:
    """The report as markdown: title, machine, then each table under its name."""
    m = report.machine
    lines = [report.title, '', f"Machine: {m['description']}; {m['threads']} threads; torch {m['torch']}, "
             f"timm {m['timm']}; peak (best GEMM, GFLOP/s): "
             + (', '.join(f'{k} {v:.0f}' for k, v in m['peak_gflops'].items()) or 'not measured')]
    for name, rows in report.tables.items():
        if not rows:
            continue
        keys = list(rows[0])
        lines += ['', f'{name}:', '', '| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
        lines += ['| ' + ' | '.join(_cell(r.get(k)) for k in keys) + ' |' for r in rows]
    return '\n'.join(lines)


def write_report(report: Report, out: Path) -> Tuple[Path, Path]:
    """Write ``out.json`` and ``out.md`` (each whole or not at all); returns both paths."""
    out = Path(out)
    json_path, md_path = out.with_suffix('.json'), out.with_suffix('.md')
    write_text_atomic(json_path, json.dumps(asdict(report), indent=2) + '\n')
    write_text_atomic(md_path, markdown(report) + '\n')
    return json_path, md_path


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_alternating(runners: Dict[K, Callable[[], Any]], runs: int, warmup: int,
                     device: torch.device = torch.device('cpu')) -> Dict[K, float]:
    """Median seconds per call of each runner, called in rotation (A B C A B C ...) so that noise hits all alike."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: Dict[K, List[float]] = {k: [] for k in runners}
    for _ in range(runs):
        for k, run in runners.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def gemm_peaks(device: torch.device = torch.device('cpu'), shapes: Sequence[Tuple[int, int, int]] = GEMM_SHAPES,
               runs: int = 5) -> Dict[str, float]:
    """Best ``torch.mm`` rate (GFLOP/s) over ``shapes`` for fp32 and, where native, bf16: the machine's peak."""
    dtypes = {'fp32': torch.float32}
    if device.type != 'cpu' or native_bf16():
        dtypes['bf16'] = torch.bfloat16
    peaks = {}
    for name, dtype in dtypes.items():
        g = torch.Generator().manual_seed(0)
        runners: Dict[Tuple[int, int, int], Callable[[], Any]] = {}
        for m, n, k in shapes:
            a, b = (torch.randn(*s, generator=g).to(device, dtype) for s in ((m, k), (k, n)))
            runners[(m, n, k)] = functools.partial(torch.mm, a, b)
        seconds = time_alternating(runners, runs, 1, device)
        peaks[name] = max(2 * m * n * k / s / 1e9 for (m, n, k), s in seconds.items())
    return peaks


def describe_machine(device: torch.device = torch.device('cpu'),
                     peak_shapes: Sequence[Tuple[int, int, int]] = ()) -> Dict[str, Any]:
    """The machine (CPU model and flags, GPU), threads, versions, and its GEMM peak if ``peak_shapes`` are given."""
    info = machine_info()
    return dict(description=info.describe(), cpu_flags=sorted(info.flags), threads=torch.get_num_threads(),
                device=str(device), torch=torch.__version__, timm=timm.__version__,
                peak_gflops=gemm_peaks(device, peak_shapes) if peak_shapes else {})


def _randomize_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm statistics as after training, so that folding and quantization are not trivially exact."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
    return model


def same_weights_pair(timm_model: str, our_model: str, **kwargs: Any) -> Tuple[nn.Module, nn.Module]:
    """timm's model and ours with identical (random) weights, in eval mode: only the implementation differs."""
    torch.manual_seed(0)
    reference = _randomize_batchnorm(timm.create_model(timm_model, **kwargs)).eval()
    ours = timm.create_model(our_model, **kwargs).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


class BenchmarkRunner:
    """The pair, the machine and the timing loop; subclasses measure one thing in :meth:`run`."""
    name = ''
    default_image_size = 224

    def __init__(self, our_model: str = 'sknet50', timm_model: str = 'skresnext50_32x4d',
                 image_size: Optional[int] = None, runs: int = 9, warmup: int = 2, device: str = 'cpu',
                 quick: bool = False, log: Callable[[str], None] = print, **model_kwargs: Any):
        if quick:  # a smoke test of the family's small pair: proves the runner works, measures nothing
            our_model, timm_model = QUICK_PAIR if (our_model, timm_model) == ('sknet50', 'skresnext50_32x4d') else (
                our_model, timm_model)
            image_size, runs, warmup = min(image_size or 64, 64), 1, 1
        self.our_name, self.timm_name, self.quick = our_model, timm_model, quick
        self.image_size = image_size or self.default_image_size
        self.runs, self.warmup, self.device, self.log = runs, warmup, torch.device(device), log
        self.reference, self.ours = (m.to(self.device) for m in same_weights_pair(timm_model, our_model,
                                                                                    **model_kwargs))

    @property
    def input_size(self) -> Tuple[int, int, int]:
        return 3, self.image_size, self.image_size

    def gflop_per_image(self) -> float:
        return 2 * count_macs(self.ours, self.input_size) / 1e9

    def machine(self) -> Dict[str, Any]:
        return describe_machine(self.device, ((256, 256, 256),) if self.quick else GEMM_SHAPES)

    def title(self, what: str) -> str:
        return (f'{what}: {self.our_name} vs timm {self.timm_name}, same weights, {self.image_size} px, median of '
                f'{self.runs} alternating runs')

    def time(self, runners: Dict[K, Callable[[], Any]]) -> Dict[K, float]:
        return time_alternating(runners, self.runs, self.warmup, self.device)

    def batch(self, batch_size: int, channels_last: bool = False) -> torch.Tensor:
        x = torch.randn(batch_size, *self.input_size, generator=torch.Generator().manual_seed(1)).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def run(self) -> Report:
        raise NotImplementedError


class InferenceRunner(BenchmarkRunner):
    """Both models through every ``optimize`` backend and precision: our best against the best peer path."""
    name = 'inference'

    def __init__(self, *args: Any, paths: Optional[Sequence[Tuple[str, str]]] = None, peers: bool = True,
                 batch_sizes: Sequence[int] = (1, 8), **kwargs: Any):
        super().__init__(*args, **kwargs)
        default = [('eager', 'fp32'), ('onnxruntime', 'fp32')] if self.quick else OUR_PATHS
        self.paths = [p for p in OUR_PATHS if p in (paths or default)]
        self.peers, self.batch_sizes = peers, tuple(batch_sizes)

    def _build(self, model: nn.Module, owner: str, paths: Sequence[Tuple[str, str]]) -> Dict[Tuple, Any]:
        built = {}
        calibration = [torch.randn(8, *self.input_size, generator=torch.Generator().manual_seed(3))] * 4
        for backend, precision in paths:
            start = time.perf_counter()
            try:
                built[(owner, backend, precision)] = optimize(
                    model, backend, precision, input_size=self.input_size,
                    calibration=calibration if precision == 'int8' else None)
            except BackendUnavailable as e:
                self.log(f'  {owner} {backend} {precision}: skipped ({e})')
                continue
            self.log(f'  {owner} {backend} {precision}: built in {time.perf_counter() - start:.0f} s')
        return built

    def run(self) -> Report:
        machine = self.machine()
        built = {**self._build(self.ours, 'sknet', self.paths),
                 **self._build(self.reference, 'timm', [p for p in self.paths if self.peers and p in PEER_PATHS])}
        rows = []
        for batch_size in self.batch_sizes:
            x = self.batch(batch_size)
            seconds = self.time({key: functools.partial(m, x) for key, m in built.items()})
            rows += [dict(path=' '.join(key), batch=batch_size, images_per_s=batch_size / seconds[key],
                          error=built[key].error, runs_as=built[key].description) for key in built]
        return Report(self.title('Inference'), machine,
                      {'paths': rows, 'summary': summarize(rows, machine['peak_gflops'], self.gflop_per_image())})


def summarize(rows: List[Dict[str, Any]], peaks: Dict[str, float], gflop: float) -> List[Dict[str, Any]]:
    """Per precision and batch size: our best path, the best peer path, their ratio, and our share of the peak."""
    def best(owner: str, precision: str, batch: int) -> Optional[Dict[str, Any]]:
        mine = [r for r in rows if r['batch'] == batch and r['path'].split()[::2] == [owner, precision]]
        return max(mine, key=lambda r: r['images_per_s'], default=None)
    out = []
    for precision in ('fp32', 'bf16', 'int8'):
        for batch in sorted({r['batch'] for r in rows}):
            ours, peer = best('sknet', precision, batch), best('timm', precision, batch)
            if ours is None:
                continue
            peak = peaks.get(precision)
            out.append(dict(precision=precision, batch=batch, ours=ours['path'], ours_images_per_s=ours['images_per_s'],
                            peer=peer and peer['path'], peer_images_per_s=peer and peer['images_per_s'],
                            ratio=peer and ours['images_per_s'] / peer['images_per_s'],
                            share_of_peak=peak and ours['images_per_s'] * gflop / peak))
    return out


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> Optional[float]:
    """Peak of live tensor bytes (MiB) during ``fn()``, everything allocated before included; None if unknown.

    CUDA: the allocator's peak. CPU: torch's ``MemTracker``, which follows every tensor, so the figure is
    deterministic, unlike the process's RSS.
    """
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
    return sum(d['Total'] for d in tracker.get_tracker_snapshot('peak').values()) / 2 ** 20


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """Forward, a loss over every output, backward, SGD step: one training step of any model."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        out = model(x)
        loss = sum(o.float().mean() for o in (out if isinstance(out, (list, tuple)) else [out]))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _inference(model: nn.Module, x: torch.Tensor, autocast: bool = False) -> Callable[[], Any]:
    def run() -> Any:
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(x)
    return run


def _laid_out(model: nn.Module, channels_last: bool) -> nn.Module:
    """A copy of ``model`` in the memory layout asked for (the runners time copies: the pair stays as built)."""
    return copy.deepcopy(model).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class EagerRunner(BenchmarkRunner):
    """Eager inference (ours folded) and training steps, contiguous and channels_last, with peak memory."""
    name = 'eager'
    CASES = (('eval', 1, False), ('eval', 1, True), ('eval', 8, False), ('eval', 8, True),
             ('train', 8, False), ('train', 8, True))

    def __init__(self, *args: Any, memory: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.memory = memory
        self.cases = (('eval', 2, True), ('train', 2, False)) if self.quick else self.CASES

    def _runners(self, mode: str, x: torch.Tensor, channels_last: bool) -> Dict[str, Callable[[], Any]]:
        if mode == 'train':
            return {k: _train_step(_laid_out(m, channels_last).train(), x)
                    for k, m in (('timm', self.reference), ('sknet', self.ours))}
        folded = {'timm': reparameterize_model(self.reference), 'sknet': fuse_model(self.ours)}
        return {k: _inference(_laid_out(m, channels_last), x) for k, m in folded.items()}

    def run(self) -> Report:
        machine = self.machine()
        gflop = self.gflop_per_image()
        rows = []
        for mode, batch_size, channels_last in self.cases:
            runners = self._runners(mode, self.batch(batch_size, channels_last), channels_last)
            ips = {k: batch_size / s for k, s in self.time(runners).items()}
            memory = {k: peak_memory_mb(r, self.device) if self.memory else None for k, r in runners.items()}
            flop = gflop * (3 if mode == 'train' else 1)  # a training step is about 3x the forward's work
            rows.append(dict(
                case=f'{mode} b{batch_size} {"channels_last" if channels_last else "contiguous"}',
                timm_images_per_s=ips['timm'], sknet_images_per_s=ips['sknet'], ratio=ips['sknet'] / ips['timm'],
                sknet_share_of_fp32_peak=ips['sknet'] * flop / machine['peak_gflops']['fp32'],
                timm_peak_mib=memory['timm'], sknet_peak_mib=memory['sknet']))
            self.log(f'  {rows[-1]["case"]}: sknet / timm x{rows[-1]["ratio"]:.2f}')
        return Report(self.title('Eager inference (ours folded) and training steps'), machine, {'cases': rows})


class BackboneRunner(BenchmarkRunner):
    """``features_only`` models as detectors run them (eager, 640 px): plain, folded and bf16 autocast vs timm's."""
    name = 'backbone'
    default_image_size = 640

    def __init__(self, *args: Any, batch_sizes: Sequence[int] = (1, 2), memory: bool = True, **kwargs: Any):
        super().__init__(*args, features_only=True, **kwargs)
        self.batch_sizes, self.memory = (1,) if self.quick else tuple(batch_sizes), memory

    def _case(self, batch_size: int, channels_last: bool) -> Dict[str, Any]:
        x = self.batch(batch_size, channels_last)
        models = {'timm': _laid_out(self.reference, channels_last), 'sknet': _laid_out(self.ours, channels_last)}
        runners = {**{k: _inference(m, x) for k, m in models.items()},
                   'sknet folded': _inference(fuse_model(models['sknet']), x)}
        if self.device.type != 'cpu' or native_bf16():
            runners.update({f'{k} bf16': _inference(m, x, autocast=True) for k, m in models.items()})
        ms = {k: 1000 * s for k, s in self.time(runners).items()}
        row = dict(layout='channels_last' if channels_last else 'contiguous', batch=batch_size,
                   timm_ms=ms['timm'], sknet_ms=ms['sknet'], sknet_x=ms['timm'] / ms['sknet'],
                   folded_ms=ms['sknet folded'], folded_x=ms['timm'] / ms['sknet folded'])
        if 'timm bf16' in ms:
            row.update(timm_bf16_ms=ms['timm bf16'], sknet_bf16_ms=ms['sknet bf16'],
                       bf16_x=ms['timm bf16'] / ms['sknet bf16'])
        self.log(f'  {row["layout"]} b{batch_size}: sknet x{row["sknet_x"]:.2f}, folded x{row["folded_x"]:.2f}')
        return row

    def _training_memory(self) -> List[Dict[str, Any]]:
        """Peak tensor memory of one training step: timm's model, ours, ours with gradient checkpointing."""
        x = self.batch(max(2, *self.batch_sizes))  # training BatchNorm needs two samples
        rows = []
        for name, model, checkpointing in (('timm', self.reference, False), ('sknet', self.ours, False),
                                           ('sknet, grad checkpointing', self.ours, True)):
            model = _laid_out(model, False).train()
            getattr(model, 'set_grad_checkpointing')(checkpointing)
            rows.append(dict(model=name, batch=x.shape[0], peak_mib=peak_memory_mb(_train_step(model, x), self.device)))
        return rows

    def run(self) -> Report:
        machine = self.machine()
        tables = {'inference': [self._case(b, cl) for cl in (False, True) for b in self.batch_sizes]}
        if self.memory:
            tables['training step memory'] = self._training_memory()
        return Report(self.title('Detection backbone (features_only), eager'), machine, tables)


def concurrent_rate(model: Callable[[torch.Tensor], Any], inputs: Sequence[torch.Tensor], calls: int) -> float:
    """Images per second of ``len(inputs)`` threads calling ``model`` at once, ``calls`` times each (thread i
    with ``inputs[i]``), as a threaded server does; from the first start to the last return."""
    start = threading.Barrier(len(inputs) + 1)

    def caller(x: torch.Tensor) -> None:
        start.wait()
        for _ in range(calls):
            model(x)
    with ThreadPoolExecutor(len(inputs)) as pool:
        futures = [pool.submit(caller, x) for x in inputs]
        start.wait()
        began = time.perf_counter()
        for f in futures:
            f.result()
    return sum(len(x) for x in inputs) * calls / (time.perf_counter() - began)


class ConcurrencyRunner(BenchmarkRunner):
    """One optimized model called from 1, 2 and 4 threads at once, per backend: throughput against one caller."""
    name = 'concurrency'
    PATHS = (('eager', 'fp32'), ('inductor', 'fp32'), ('onnxruntime', 'fp32'), ('openvino', 'fp32'),
             ('openvino', 'bf16'), ('openvino', 'int8'))

    def __init__(self, *args: Any, paths: Optional[Sequence[Tuple[str, str]]] = None, callers: Sequence[int] = (1, 2, 4),
                 batch_sizes: Sequence[int] = (1,), calls: int = 8, **kwargs: Any):
        super().__init__(*args, **kwargs)
        default = [('eager', 'fp32'), ('onnxruntime', 'fp32')] if self.quick else self.PATHS
        self.paths = [p for p in self.PATHS if p in (paths or default)]
        self.callers, self.batch_sizes, self.calls = tuple(callers), tuple(batch_sizes), 1 if self.quick else calls

    def run(self) -> Report:
        machine = self.machine()
        calibration = [torch.randn(8, *self.input_size, generator=torch.Generator().manual_seed(3))] * 4
        built = {}
        for backend, precision in self.paths:
            try:
                built[f'{backend} {precision}'] = optimize(self.ours, backend, precision, input_size=self.input_size,
                                                           calibration=calibration if precision == 'int8' else None)
            except BackendUnavailable as e:
                self.log(f'  {backend} {precision}: skipped ({e})')
        rows = []
        for batch_size in self.batch_sizes:
            inputs = [self.batch(batch_size) + i for i in range(max(self.callers))]
            rates: Dict[Tuple[str, int], List[float]] = {}
            for _ in range(self.warmup + self.runs):  # rounds alternate between every path and caller count
                for path, model in built.items():
                    for n in self.callers:
                        rates.setdefault((path, n), []).append(concurrent_rate(model, inputs[:n], self.calls))
            for path, model in built.items():
                one = statistics.median(rates[(path, 1)][self.warmup:]) if 1 in self.callers else None
                for n in self.callers:
                    rate = statistics.median(rates[(path, n)][self.warmup:])
                    rows.append(dict(path=path, batch=batch_size, callers=n, images_per_s=rate,
                                     vs_one_caller=one and rate / one, runs_as=model.description))
                self.log(f'  {path} b{batch_size}: ' + ', '.join(f"{r['callers']} callers x{r['vs_one_caller']:.2f}"
                                                                 for r in rows if r['path'] == path and
                                                                 r['batch'] == batch_size and r['vs_one_caller']))
        return Report(f'Concurrent callers of one optimized {self.our_name}, {self.image_size} px, {self.calls} calls '
                      f'each, median of {self.runs} alternating rounds', machine, {'throughput': rows})



@contextlib.contextmanager
def serving_process(arguments: Sequence[str], env: Optional[Dict[str, str]] = None,
                    timeout: float = 300) -> Iterator[str]:
    """``timm-sknet serve ARGUMENTS --port 0`` in a child process; yields its URL once a worker answers, then
    interrupts it (SIGINT, as Ctrl+C). Raises RuntimeError if it does not start, or does not end cleanly."""
    import httpx2
    proc = subprocess.Popen([sys.executable, '-m', 'timm_sknet', 'serve', *arguments, '--port', '0'],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: 'queue.Queue[Optional[str]]' = queue.Queue()

    def read(stream: IO[str]) -> None:  # to its end: a full pipe would block the server
        for line in stream:
            lines.put(line)
        lines.put(None)
    threading.Thread(target=read, args=(proc.stderr,), daemon=True).start()
    try:
        deadline, log = time.monotonic() + timeout, ['']
        while 'Uvicorn running on' not in log[-1]:  # printed once it has bound the port
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:  # it ended (its log is whole), or the time is up
                waited = f' within {timeout:.0f} s' if time.monotonic() > deadline else ''
                raise RuntimeError(f'timm-sknet serve did not start{waited}:\n' + ''.join(log))
            log.append(line)
        url = log[-1].split('Uvicorn running on ', 1)[1].split()[0]
        while True:  # with --workers, each worker listens once it has built its model
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(f'{url}/health', timeout=timeout).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'timm-sknet serve bound {url} but no worker answered')
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError('timm-sknet serve did not stop within 30 s of SIGINT') from None
    if proc.returncode != 0:
        raise RuntimeError(f'timm-sknet serve ended with status {proc.returncode}')


@dataclass
class Load:
    """What clients saw: per request its latency (s) and HTTP status, and the wall time (s) they took together."""
    timings: List[Tuple[float, int]] = field(default_factory=list)
    seconds: float = 0.0

    def __iadd__(self, other: 'Load') -> 'Load':
        self.timings += other.timings
        self.seconds += other.seconds
        return self

    def summary(self) -> Dict[str, Any]:
        """requests, failed (not 200), p50 / p99 latency in ms, and requests per second."""
        ms = sorted(1000 * t for t, _ in self.timings)
        return dict(requests=len(ms), failed=sum(status != 200 for _, status in self.timings),
                    p50_ms=statistics.median(ms), p99_ms=ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
                    requests_per_s=len(ms) / self.seconds)


def load_clients(url: str, image: bytes, clients: int, requests: int) -> Load:
    """``clients`` threads, each with its own connection, post ``image`` to ``url``/predict, each sending its next
    request on the answer to its last, until ``requests`` were answered."""
    import httpx2

    def client(n: int) -> List[Tuple[float, int]]:
        timings = []
        with httpx2.Client(timeout=300) as http:
            for _ in range(n):
                start = time.perf_counter()
                status = http.post(f'{url}/predict', files={'file': ('image.jpg', image, 'image/jpeg')}).status_code
                timings.append((time.perf_counter() - start, status))
        return timings

    shares = [requests // clients + (i < requests % clients) for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        timings = [t for part in pool.map(client, shares) for t in part]
    return Load(timings, time.perf_counter() - start)


class ServeRunner:
    """``timm-sknet serve`` under concurrent clients (latency p50 / p99, throughput), for each way of sharing the
    cores: worker processes x model calls at once per process x runtime threads per call.

    Every setup is served at once, each by its own ``timm-sknet serve`` process as users run it (an idle server
    takes no CPU); the clients, threads of this process posting a 640x480 JPEG (so decoding and resizing count),
    load one server at a time, in rotation over ``rounds``, so that the machine's noise hits all alike.
    """
    name = 'serve'

    def __init__(self, our_model: str = 'sknet50', backend: str = 'eager', image_size: Optional[int] = None,
                 clients: Sequence[int] = (1, 2, 4), requests: int = 96, rounds: int = 3,
                 setups: Optional[Sequence[Tuple[int, int, int]]] = None, quick: bool = False,
                 env: Optional[Dict[str, str]] = None, log: Callable[[str], None] = print):
        cores = torch.get_num_threads()
        default = [(1, 1, cores), (1, cores, 1), (cores, 1, 1)]  # (workers, concurrency, threads)
        if quick:  # proves it runs, measures nothing
            image_size, clients, requests, rounds, default = image_size or 64, (1, 2), 4, 2, default[:1]
        self.model, self.backend, self.image_size, self.quick = our_model, backend, image_size or 224, quick
        self.clients, self.requests, self.rounds = tuple(clients), requests, rounds
        self.setups, self.env, self.log = list(setups or default), env, log

    def _image(self) -> bytes:
        from PIL import Image

        from .main_job import SAMPLES_DIR
        out = io.BytesIO()
        with Image.open(sorted(SAMPLES_DIR.glob('*.png'))[0]) as image:
            image.convert('RGB').resize((640, 480)).save(out, 'JPEG', quality=90)
        return out.getvalue()

    def _arguments(self, workers: int, concurrency: int, threads: int) -> List[str]:
        return ['--model', self.model, '--backend', self.backend, '--img-size', str(self.image_size),
                '--workers', str(workers), '--concurrency', str(concurrency), '--threads', str(threads)]

    def run(self) -> Report:
        image, rows, load_before = self._image(), [], os.getloadavg()[0]
        names = [f'{w} worker(s) x {c} call(s) x {t} thread(s)' for w, c, t in self.setups]
        with contextlib.ExitStack() as stack:
            urls = [stack.enter_context(serving_process(self._arguments(*setup), self.env)) for setup in self.setups]
            for clients in self.clients:
                loads = {name: Load() for name in names}
                for url in urls:  # warm-up: every worker process and every connection
                    load_clients(url, image, clients, 2 * clients)
                for _ in range(self.rounds):
                    for name, url in zip(names, urls):
                        loads[name] += load_clients(url, image, clients, max(1, self.requests // self.rounds))
                for name, load in loads.items():
                    rows.append(dict(setup=name, clients=clients, **load.summary()))
                    self.log(f'  {name}, {clients} clients: {rows[-1]["requests_per_s"]:.1f} requests/s, '
                             f'p50 {rows[-1]["p50_ms"]:.0f} ms, p99 {rows[-1]["p99_ms"]:.0f} ms')
        title = (f'HTTP service (timm-sknet serve): {self.model}, {self.backend}, {self.image_size} px, a 640x480 '
                 f'JPEG per request, {self.requests} timed requests per row in {self.rounds} alternating rounds; '
                 f'load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other processes share '
                 f'the cores when it is above 0)')
        return Report(title, describe_machine(), {'latency and throughput': rows})


RUNNERS = {r.name: r for r in (InferenceRunner, EagerRunner, BackboneRunner, ConcurrencyRunner, ServeRunner)}


def int8_accuracy(tiny_images: int = 1200, sknet50_images: int = 64, log: Callable[[str], None] = print) -> Report:
    """int8 (OpenVINO + NNCF) against fp32 where it can be measured offline.

    The embedded ``sknet_tiny.synthetic``: calibrated on 300 training-split shapes, evaluated on held-out ones (top-1
    of each and their agreement). ``sknet50`` with random weights and trained-like BatchNorm statistics at 224 px:
    calibrated on 300 synthetic images, compared with fp32 on others (relative error, top-1 agreement); random
    weights give flat logits, so this agreement is harder than a trained model's, and says nothing about ImageNet.
    """
    from .synthetic_data import SyntheticShapes

    def batches(model: nn.Module, split: str, n: int, size: int, seed: int = 0,
                batch: int = 32) -> Tuple[List[torch.Tensor], List[int]]:
        transform = timm.data.create_transform(**timm.data.resolve_data_config(
            {'input_size': (3, size, size)}, model=model))
        ds = SyntheticShapes(n, image_size=size, seed=seed, split=split, num_classes=6, transform=transform)
        return [torch.stack([ds[i][0] for i in range(j, min(j + batch, n))]) for j in range(0, n, batch)], ds.targets

    def logits(model: nn.Module, images: List[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([model(b) for b in images])
    rows = []
    for name, n_eval in (('sknet_tiny.synthetic', tiny_images), ('sknet50', sknet50_images)):
        model = timm.create_model(name, pretrained=name.endswith('synthetic')).eval()
        if name == 'sknet50':
            _randomize_batchnorm(model)
        size = getattr(model, 'pretrained_cfg')['input_size'][-1]
        calibration, _ = batches(model, 'train', 300, size)
        images, labels = batches(model, 'validation', n_eval, size)
        ref, out = logits(model, images), logits(optimize(model, 'openvino', 'int8', calibration=calibration), images)
        targets = torch.tensor(labels)
        rows.append(dict(model=name, images=n_eval, relative_error=float((out - ref).abs().max() / ref.abs().max()),
                         top1_agreement=float((out.argmax(1) == ref.argmax(1)).float().mean()),
                         fp32_top1=float((ref.argmax(1) == targets).float().mean()) if model.num_classes == 6 else None,
                         int8_top1=float((out.argmax(1) == targets).float().mean()) if model.num_classes == 6 else None))
        log(f'  {name}: top-1 agreement {rows[-1]["top1_agreement"]:.2%}')
    return Report('int8 (OpenVINO + NNCF) against fp32', describe_machine(), {'accuracy': rows})
