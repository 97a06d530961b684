"""``inference``: every backend and precision of ``optimize`` for both models, the peer comparison."""
import functools
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..inference import BackendUnavailable, optimize
from .report import Report
from .timing import BenchmarkRunner

__all__ = ['InferenceRunner', 'OUR_PATHS', 'PEER_PATHS', 'summarize']


#: (backend, precision) run for both models, and for ours only
PEER_PATHS = (('eager', 'fp32'), ('eager', 'bf16'), ('inductor', 'fp32'), ('inductor', 'bf16'),
              ('onnxruntime', 'fp32'), ('openvino', 'fp32'), ('openvino', 'bf16'))


OUR_PATHS = PEER_PATHS + (('openvino', 'int8'),)


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
