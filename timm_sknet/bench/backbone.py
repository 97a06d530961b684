"""``backbone``: ``features_only`` at 640 px as detectors run it, fp32 and bf16 autocast, both memory layouts;
and ``optimize`` built for that size against built for any size (``dynamic_size``), per backend."""
import os
import time
from typing import Any, Dict, List, Sequence

import torch

from ..inference import fuse_model, native_bf16, optimize
from .eager import inference_step, laid_out, train_step
from .report import Report
from .timing import BenchmarkRunner, peak_memory_mb

__all__ = ['BackboneRunner']


class BackboneRunner(BenchmarkRunner):
    """``features_only`` models as detectors run them (eager, 640 px): plain, folded and bf16 autocast vs timm's."""
    name = 'backbone'
    default_image_size = 640

    def __init__(self, *args: Any, batch_sizes: Sequence[int] = (1, 2), memory: bool = True,
                 optimize_backends: Sequence[str] = (), **kwargs: Any):
        """``optimize_backends``: measure ``optimize(dynamic_size=True)`` on these instead of the eager tables."""
        super().__init__(*args, features_only=True, **kwargs)
        self.batch_sizes, self.memory = (1,) if self.quick else tuple(batch_sizes), memory
        self.optimize_backends = tuple(optimize_backends)

    def _case(self, batch_size: int, channels_last: bool) -> Dict[str, Any]:
        x = self.batch(batch_size, channels_last)
        models = {'timm': laid_out(self.reference, channels_last), 'sknet': laid_out(self.ours, channels_last)}
        runners = {**{k: inference_step(m, x) for k, m in models.items()},
                   'sknet folded': inference_step(fuse_model(models['sknet']), x)}
        if self.device.type != 'cpu' or native_bf16():
            runners.update({f'{k} bf16': inference_step(m, x, autocast=True) for k, m in models.items()})
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
            model = laid_out(model, False).train()
            getattr(model, 'set_grad_checkpointing')(checkpointing)
            rows.append(dict(model=name, batch=x.shape[0], peak_mib=peak_memory_mb(train_step(model, x), self.device)))
        return rows

    def _first_call_ms(self, model: Any, x: torch.Tensor) -> float:
        start = time.perf_counter()
        model(x)
        return 1000 * (time.perf_counter() - start)

    def _dynamic_size(self, backend: str) -> Dict[str, Any]:
        """One backend, batch 1, fp32: built for the size vs for any size, at the size; then a new size's first
        call (compilation or shape inference, if any) and its steady time, on the dynamic build."""
        size, other = self.input_size, (3, self.image_size * 3 // 4 + 5, self.image_size + 37)
        x, y = self.batch(1), torch.randn(1, *other, generator=torch.Generator().manual_seed(2)).to(self.device)
        built, build_s = {}, {}
        for dynamic in (False, True):
            start = time.perf_counter()
            built[dynamic] = optimize(self.ours, backend, input_size=size, dynamic_size=dynamic)
            build_s[dynamic] = time.perf_counter() - start
        first = self._first_call_ms(built[True], y)
        ms = {k: 1000 * s for k, s in self.time({'static': lambda: built[False](x), 'dynamic': lambda: built[True](x),
                                                 'new size': lambda: built[True](y)}).items()}
        row = dict(backend=backend, static_build_s=build_s[False], dynamic_build_s=build_s[True],
                   static_ms=ms['static'], dynamic_ms=ms['dynamic'], dynamic_x=ms['static'] / ms['dynamic'],
                   new_size=f'{other[1]}x{other[2]}', new_size_first_call_ms=first, new_size_ms=ms['new size'])
        self.log(f'  {backend}: dynamic x{row["dynamic_x"]:.2f} at {size[1]}px, first call at {row["new_size"]} '
                 f'{first:.0f} ms')
        return row

    def _dynamic_report(self) -> Report:
        machine = self.machine()
        machine['load_average'] = [round(v, 2) for v in os.getloadavg()]  # on a shared machine, its load
        rows = [self._dynamic_size(b) for b in self.optimize_backends]
        machine['load_average_after'] = [round(v, 2) for v in os.getloadavg()]
        title = (f'optimize() of {self.our_name} features_only built for {self.image_size} px against built for any '
                 f'size (dynamic_size=True), batch 1, fp32, median of {self.runs} alternating runs')
        return Report(title, machine, {'per backend (build in s, calls in ms)': rows})

    def run(self) -> Report:
        if self.optimize_backends:
            return self._dynamic_report()
        machine = self.machine()
        tables = {'inference': [self._case(b, cl) for cl in (False, True) for b in self.batch_sizes]}
        if self.memory:
            tables['training step memory'] = self._training_memory()
        return Report(self.title('Detection backbone (features_only), eager'), machine, tables)
