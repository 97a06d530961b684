"""``backbone``: ``features_only`` at 640 px as detectors run it, fp32 and bf16 autocast, both memory layouts."""
from typing import Any, Dict, List, Sequence

from ..inference import fuse_model, native_bf16
from .eager import inference_step, laid_out, train_step
from .report import Report
from .timing import BenchmarkRunner, peak_memory_mb

__all__ = ['BackboneRunner']


class BackboneRunner(BenchmarkRunner):
    """``features_only`` models as detectors run them (eager, 640 px): plain, folded and bf16 autocast vs timm's."""
    name = 'backbone'
    default_image_size = 640

    def __init__(self, *args: Any, batch_sizes: Sequence[int] = (1, 2), memory: bool = True, **kwargs: Any):
        super().__init__(*args, features_only=True, **kwargs)
        self.batch_sizes, self.memory = (1,) if self.quick else tuple(batch_sizes), memory

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

    def run(self) -> Report:
        machine = self.machine()
        tables = {'inference': [self._case(b, cl) for cl in (False, True) for b in self.batch_sizes]}
        if self.memory:
            tables['training step memory'] = self._training_memory()
        return Report(self.title('Detection backbone (features_only), eager'), machine, tables)
