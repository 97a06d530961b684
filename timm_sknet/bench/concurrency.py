"""``concurrency``: one optimized model called from 1, 2 and 4 threads at once, per backend."""
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..inference import BackendUnavailable, optimize
from .report import Report
from .timing import BenchmarkRunner

__all__ = ['ConcurrencyRunner', 'concurrent_rate']


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
