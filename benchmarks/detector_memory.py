"""Peak memory of one detector training step, with and without gradient checkpointing of the backbone.

Method: a ``TorchDispatchMode`` sees every tensor an operator returns (forward, backward and checkpoint
recomputation alike) and counts each new storage's bytes until Python frees it; the peak of that count
is the step's tensor memory, independent of the allocator and of the device. Storages that existed before
the step (parameters, buffers, the input batch) are excluded, so the figure is what the step adds:
activations kept for backward, temporaries and the parameter gradients. Each configuration also runs in a
fresh process whose peak RSS (``ru_maxrss``) is reported as a cross-check.

    python benchmarks/detector_memory.py                       # Faster R-CNN, sknet50, 2 x 512 x 512
    python benchmarks/detector_memory.py --model sknet18 --size 256
"""
import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
import weakref
from typing import Iterable, Optional, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

MiB = 2 ** 20


class TensorMemoryTracker(TorchDispatchMode):
    """Bytes of tensor storage created inside the context and still alive: ``current`` and ``peak``."""

    def __init__(self, existing: Iterable[torch.Tensor] = ()):
        super().__init__()
        self._seen = weakref.WeakSet(t.untyped_storage() for t in existing)
        self.current = self.peak = 0

    def _free(self, nbytes: int) -> None:
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != 'meta':
                storage = t.untyped_storage()
                if storage not in self._seen:  # views and in-place results share a storage: count it once
                    self._seen.add(storage)
                    self.current += storage.nbytes()
                    weakref.finalize(storage, self._free, storage.nbytes())
        self.peak = max(self.peak, self.current)
        return out


def build(model: str, size: int, fpn_channels: int, feature_cls: str):
    from torchvision.models.detection import FasterRCNN

    from timm_sknet.models.detection import sknet_fpn_backbone
    # BatchNorm trains (batch 2), as when fine-tuning with unfrozen statistics
    backbone = sknet_fpn_backbone(model, out_channels=fpn_channels, freeze_bn=False, feature_cls=feature_cls)
    return FasterRCNN(backbone, num_classes=3, min_size=size, max_size=size), backbone


def batch(n: int, size: int):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    targets = [dict(boxes=torch.tensor([[10.0, 20.0, size / 2, size / 2], [size / 3, size / 4, size - 5, size - 9]]),
                    labels=torch.tensor([1, 2])) for _ in range(n)]
    return images, targets


def measure(model: str, size: int, n: int, fpn_channels: int, feature_cls: str, checkpointing: bool) -> dict:
    """One warm-up step, then one measured step (forward + backward, gradients set to None before)."""
    import timm_sknet  # noqa: F401
    torch.manual_seed(0)
    detector, backbone = build(model, size, fpn_channels, feature_cls)
    backbone.set_grad_checkpointing(checkpointing)
    detector.train()
    images, targets = batch(n, size)
    sum(detector(images, targets).values()).backward()  # warm-up: lazy inits, allocator
    detector.zero_grad(set_to_none=True)
    existing = itertools.chain(detector.parameters(), detector.buffers(), images,
                               *(t.values() for t in targets))
    start = time.perf_counter()
    with TensorMemoryTracker(existing) as tracker:
        loss = sum(detector(images, targets).values())
        after_forward = tracker.current
        loss.backward()
        del loss
    seconds = time.perf_counter() - start
    grads = sum(p.grad.numel() * p.grad.element_size() for p in detector.parameters() if p.grad is not None)
    return dict(model=model, size=size, batch=n, feature_cls=feature_cls, checkpointing=checkpointing, peak_mib=tracker.peak / MiB,
                after_forward_mib=after_forward / MiB, grads_mib=grads / MiB, step_s=seconds,
                max_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default='sknet50')
    p.add_argument('--size', type=int, default=512)
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--fpn-channels', type=int, default=256)
    p.add_argument('--feature-cls', nargs='+', default=['list', 'getter'],
                   help="feature extractors to compare: 'list' checkpoints stage by stage, 'getter' block by block")
    p.add_argument('--one', choices=('off', 'on'), help=argparse.SUPPRESS)  # child process: one configuration
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(
            args.model, args.size, args.batch, args.fpn_channels, args.feature_cls[0], args.one == 'on')))
        return
    rows = []
    configs = [('list', 'off')] + [(f, 'on') for f in args.feature_cls]
    for feature_cls, mode in configs:  # a fresh process each, so peak RSS belongs to one configuration
        cmd = [sys.executable, __file__, '--model', args.model, '--size', str(args.size), '--batch',
               str(args.batch), '--fpn-channels', str(args.fpn_channels), '--feature-cls', feature_cls,
               '--one', mode]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
    print(f'Faster R-CNN + FPN({args.fpn_channels}) on {args.model}, {args.batch} x 3 x {args.size} x {args.size}, '
          f'one training step on {torch.get_num_threads()} CPU threads (torch {torch.__version__})')
    print('| grad checkpointing | peak tensor memory | saved | after forward | param grads | peak RSS | step |')
    print('|---|---|---|---|---|---|---|')
    off = rows[0]
    for r in rows:
        mode = f"on, feature_cls='{r['feature_cls']}'" if r['checkpointing'] else 'off'
        print(f"| {mode} | {r['peak_mib']:.0f} MiB | {100 * (1 - r['peak_mib'] / off['peak_mib']):.0f}% "
              f"| {r['after_forward_mib']:.0f} MiB | {r['grads_mib']:.0f} MiB | {r['max_rss_mib']:.0f} MiB "
              f"| {r['step_s']:.1f} s |")


if __name__ == '__main__':
    main()
