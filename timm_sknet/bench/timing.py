"""The timing loop, the machine's peak, and the runner base class: the pair of models with the same weights."""
import functools
import statistics
import time
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple, TypeVar

import torch
from torch import nn

import timm

from ..inference import machine_info, native_bf16
from ..models.complexity import count_macs
from .report import Report

__all__ = ['BenchmarkRunner', 'GEMM_SHAPES', 'QUICK_PAIR', 'describe_machine', 'gemm_peaks', 'peak_memory_mb', 'same_weights_pair', 'time_alternating']


#: what a timed runner is called by (a name, or a (path, variant) key)
K = TypeVar('K', bound=Hashable)


GEMM_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (4096, 1024, 1024), (512, 4096, 512))


QUICK_PAIR = ('sknet18', 'skresnet18')


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


def randomize_batchnorm(model: nn.Module) -> nn.Module:
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
    reference = randomize_batchnorm(timm.create_model(timm_model, **kwargs)).eval()
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
