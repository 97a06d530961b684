"""``eager``: eager inference (folded) and training steps with their peak memory."""
import copy
from typing import Any, Callable, Dict

import torch
from torch import nn

from timm.utils import reparameterize_model

from ..inference import fuse_model
from .report import Report
from .timing import BenchmarkRunner, peak_memory_mb

__all__ = ['EagerRunner']


def train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """Forward, a loss over every output, backward, SGD step: one training step of any model."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        out = model(x)
        loss = sum(o.float().mean() for o in (out if isinstance(out, (list, tuple)) else [out]))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def inference_step(model: nn.Module, x: torch.Tensor, autocast: bool = False) -> Callable[[], Any]:
    def run() -> Any:
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(x)
    return run


def laid_out(model: nn.Module, channels_last: bool) -> nn.Module:
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
            return {k: train_step(laid_out(m, channels_last).train(), x)
                    for k, m in (('timm', self.reference), ('sknet', self.ours))}
        folded = {'timm': reparameterize_model(self.reference), 'sknet': fuse_model(self.ours)}
        return {k: inference_step(laid_out(m, channels_last), x) for k, m in folded.items()}

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
