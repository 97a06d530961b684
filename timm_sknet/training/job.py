"""``timm-sknet train``: train or fine-tune any sknet on an ImageFolder or on the built-in synthetic shapes.

One process on CPU or GPU, or many with ``torchrun`` (DistributedDataParallel: gloo on CPU, nccl on
GPU). Processes, seeding, data, augmentation, optimizer, scheduler, EMA, losses and the metrics CSV are
timm's own (``timm.utils``, ``timm.data``, ``timm.optim``, ``timm.scheduler``), so every option means what
it means in timm's ``train.py``. The job is built in parts (:func:`build_job`), then runs
:func:`train_one_epoch`, :func:`validate` and :func:`save_epoch` per epoch.

Output folder::

    checkpoint/   config.json + model.safetensors (Hub layout) + training_state.pt, after every epoch
    model/        the final weights in Hub layout (EMA weights with --model-ema): load them with
                  timm.create_model('local-dir:<output>/model', pretrained=True)
    metrics.csv   one row per epoch (timm's update_summary format)
    summary.json  final metrics, timing, and the weight digests of every process (exported and trained weights)

Resuming (``--resume <output or checkpoint folder>``) restores weights, optimizer, scheduler, EMA, grad
scaler and epoch. Each epoch's randomness (shuffling, augmentation, drop-path) is seeded from
``(--seed, epoch, rank)`` and loader workers are not kept across epochs, so a resumed run continues
exactly as the uninterrupted run would have (bit-exact on CPU with a fixed thread count).
"""
import argparse
import hashlib
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from timm.utils import dispatch_clip_grad, distribute_bn, init_distributed_device, random_seed

from ..file_io import write_text_atomic
from .arguments import validate_args
from .checkpoint import load_checkpoint, resolve_resume_path, save_checkpoint, write_metrics
from .parts import build_datasets, build_loaders, build_model, build_optimization, set_export_cfg

__all__ = ['TrainJob', 'build_job', 'run_train', 'state_digest', 'train_one_epoch', 'validate']


@dataclass
class TrainJob:
    """Everything one training process works with, built by :func:`build_job`."""
    args: argparse.Namespace
    device: torch.device
    model: nn.Module
    train_model: nn.Module  # ``model``, or its DistributedDataParallel wrapper
    class_names: List[str]
    data_cfg: Dict[str, Any]
    loader_train: Any
    loader_val: Any
    optimizer: Any
    scheduler: Any
    num_epochs: int
    criterion: nn.Module
    mixup: Optional[Callable] = None
    scaler: Optional[Any] = None
    ema: Optional[Any] = None
    amp_ctx: Callable = nullcontext
    start_epoch: int = 0
    num_updates: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def distributed(self) -> bool:
        return self.args.world_size > 1

    @property
    def primary(self) -> bool:
        return self.args.rank == 0

    def log(self, message: str) -> None:
        if self.primary:
            print(message, flush=True)


def _epoch_seed(seed: int, epoch: int) -> int:
    """Distinct, reproducible seed per (run seed, epoch); timm's ``random_seed`` adds the rank."""
    return ((seed * 1_000_003 + epoch) * 1_009) % 2 ** 31


def setup_processes(args: argparse.Namespace) -> torch.device:
    """Pick the device and join torchrun's process group if there is one (timm's ``init_distributed_device``,
    which sets ``args.world_size``, ``args.rank`` and ``args.local_rank``)."""
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError('--device cuda was asked for, but torch sees no CUDA device; use --device cpu')
    return init_distributed_device(args)


def build_job(args: argparse.Namespace) -> TrainJob:
    """Processes, seed, data, model, loaders, optimisation and (with ``--resume``) the restored state."""
    device = setup_processes(args)
    validate_args(args, args.world_size, device)
    random_seed(args.seed, 0)  # the same initial weights in every process
    train_ds, val_ds, class_names = build_datasets(args)
    model, data_cfg = build_model(args, len(class_names), device)
    loader_train, loader_val = build_loaders(args, train_ds, val_ds, data_cfg, device)
    parts = build_optimization(args, model, len(loader_train), len(class_names), device)
    job = TrainJob(args=args, device=device, model=model, train_model=model, class_names=class_names,
                   data_cfg=data_cfg, loader_train=loader_train, loader_val=loader_val, **parts)
    if args.resume:
        restore(job, resolve_resume_path(args.resume))
    if job.distributed:
        job.train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None)
    return job


def restore(job: TrainJob, ckpt: Path) -> None:
    """Load weights, optimizer, scheduler, scaler, EMA and progress from a checkpoint folder."""
    state = load_checkpoint(ckpt, job.model)
    job.optimizer.load_state_dict(state['optimizer'])
    job.scheduler.load_state_dict(state['scheduler'])
    if job.scaler is not None and state.get('scaler'):
        job.scaler.load_state_dict(state['scaler'])
    if job.ema is not None:
        if state.get('ema') is None:
            raise ValueError(f'{ckpt} has no EMA weights (it was trained without --model-ema); drop '
                             f'--model-ema or start a new run')
        job.ema.module.load_state_dict(state['ema'])
    job.start_epoch, job.num_updates, job.history = state['epoch'], state['num_updates'], list(state['history'])
    job.log(f'resumed from {ckpt} at epoch {job.start_epoch}, step {job.num_updates}')


def _optimizer_step(job: TrainJob, loss: torch.Tensor) -> None:
    job.optimizer.zero_grad(set_to_none=True)
    clip = job.args.clip_grad
    if job.scaler is not None:
        job.scaler.scale(loss).backward()
        if clip:
            job.scaler.unscale_(job.optimizer)
            dispatch_clip_grad(job.model.parameters(), clip)
        job.scaler.step(job.optimizer)
        job.scaler.update()
    else:
        loss.backward()
        if clip:
            dispatch_clip_grad(job.model.parameters(), clip)
        job.optimizer.step()


def train_one_epoch(job: TrainJob, epoch: int) -> Dict[str, float]:
    """One pass over the training data; returns the mean loss (over all processes) and the image rate."""
    args, device = job.args, job.device
    start = time.perf_counter()
    job.train_model.train()
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    for step, (x, y) in enumerate(job.loader_train):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if job.mixup is not None:
            x, y = job.mixup(x, y)
        with job.amp_ctx():
            loss = job.criterion(job.train_model(x), y)
        _optimizer_step(job, loss)
        job.num_updates += 1
        job.scheduler.step_update(num_updates=job.num_updates)
        if job.ema is not None:
            job.ema.update(job.model, step=job.num_updates)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}: lower --lr, '
                                     f'add --clip-grad, or turn off --amp')
        loss_sum += torch.tensor([loss.item() * x.shape[0], x.shape[0]], dtype=torch.float64, device=device)
        if args.log_interval and (step + 1) % args.log_interval == 0:
            job.log(f'  epoch {epoch + 1} step {step + 1}/{len(job.loader_train)} loss {loss.item():.4f} '
                    f'lr {job.optimizer.param_groups[0]["lr"]:.2e}')
    if job.distributed:
        dist.all_reduce(loss_sum)
    seconds = time.perf_counter() - start
    return dict(loss=loss_sum[0].item() / loss_sum[1].item(), time_s=seconds, images_per_s=loss_sum[1].item() / seconds)


def validate(model: nn.Module, loader: Iterable[Any], device: torch.device, amp_ctx: Callable = nullcontext,
             distributed: bool = False) -> Dict[str, float]:
    """Mean loss and top-1 (%) over the whole validation set, summed across processes."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with amp_ctx():
                out = model(x)
            totals[0] += nn.functional.cross_entropy(out.float(), y, reduction='sum')
            totals[1] += (out.argmax(1) == y).sum()
            totals[2] += y.numel()
    if distributed:
        dist.all_reduce(totals)
    loss_sum, correct, count = totals.tolist()
    return dict(loss=loss_sum / max(count, 1), top1=100.0 * correct / max(count, 1))


def _sync_batchnorm_statistics(job: TrainJob) -> None:
    """Without --sync-bn every replica ends the epoch with the same (averaged) BatchNorm statistics."""
    if job.distributed and not job.args.sync_bn:
        distribute_bn(job.model, job.args.world_size, reduce=True)
        if job.ema is not None:
            distribute_bn(job.ema.module, job.args.world_size, reduce=True)


def run_epoch(job: TrainJob, epoch: int) -> Dict[str, Any]:
    """Train, average BatchNorm statistics, validate (the EMA too), step the schedule; the epoch's metrics."""
    random_seed(_epoch_seed(job.args.seed, epoch), job.args.rank)
    if job.distributed:
        job.loader_train.sampler.set_epoch(epoch)
    train = train_one_epoch(job, epoch)
    _sync_batchnorm_statistics(job)
    val = validate(job.model, job.loader_val, job.device, job.amp_ctx, job.distributed)
    row = dict(epoch=epoch + 1, train_loss=train['loss'], val_loss=val['loss'], val_top1=val['top1'],
               lr=job.optimizer.param_groups[0]['lr'], train_time_s=train['time_s'],
               images_per_s=train['images_per_s'])
    if job.ema is not None:
        ema = validate(job.ema.module, job.loader_val, job.device, job.amp_ctx, job.distributed)
        row['ema_val_loss'], row['ema_val_top1'] = ema['loss'], ema['top1']
    job.scheduler.step(epoch + 1, metric=val['top1'])
    job.log(f'epoch {epoch + 1}/{job.num_epochs} train_loss {row["train_loss"]:.4f} val_loss {val["loss"]:.4f} '
            f'val_top1 {val["top1"]:.2f}%' + (f' ema_top1 {row["ema_val_top1"]:.2f}%' if job.ema else '') +
            f' ({train["images_per_s"]:.0f} img/s, {train["time_s"]:.1f}s)')
    return row


def save_epoch(job: TrainJob, epoch: int) -> None:
    """The resumable checkpoint and the metrics CSV, written by the primary process."""
    if not job.primary:
        return
    state = dict(epoch=epoch + 1, num_updates=job.num_updates, optimizer=job.optimizer.state_dict(),
                 scheduler=job.scheduler.state_dict(), scaler=job.scaler.state_dict() if job.scaler else None,
                 ema=job.ema.module.state_dict() if job.ema else None, history=job.history)
    set_export_cfg(job.model, job.data_cfg, f'timm-sknet train checkpoint after epoch {epoch + 1}')
    save_checkpoint(Path(job.args.output) / 'checkpoint', job.model, state, job.class_names)
    write_metrics(Path(job.args.output) / 'metrics.csv', job.history)


def state_digest(model: nn.Module) -> str:
    """sha256 over every tensor of the state dict (names, dtypes, shapes, bytes): equal iff identical."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to('cpu').contiguous().reshape(-1)
        h.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


def _gather_digests(job: TrainJob, digest: str) -> List[str]:
    if not job.distributed:
        return [digest]
    digests: List[Any] = [None] * job.args.world_size
    dist.all_gather_object(digests, digest)
    return digests


def finish(job: TrainJob, wall_time: float) -> Dict[str, Any]:
    """The summary; on a complete run the exported model (EMA weights with --model-ema) as ``model/``."""
    args, history = job.args, job.history
    final = job.ema.module if job.ema is not None else job.model
    digest = state_digest(final)
    digests = _gather_digests(job, digest)
    model_digests = digests if final is job.model else _gather_digests(job, state_digest(job.model))
    complete = bool(history) and history[-1]['epoch'] == job.num_epochs
    summary = dict(
        model=args.model, model_kwargs=args.model_kwargs, num_params=sum(p.numel() for p in job.model.parameters()),
        classes=job.class_names, data=args.data_dir or 'synthetic', epochs_run=len(history) and history[-1]['epoch'],
        epochs=job.num_epochs, complete=complete, world_size=args.world_size, device=job.device.type,
        wall_time_s=wall_time, final=history[-1] if history else None, exported='ema' if job.ema else 'model',
        state_digest=digest, rank_state_digests=digests, rank_model_digests=model_digests,
        ranks_in_sync=len(set(digests)) == len(set(model_digests)) == 1)
    if not summary['ranks_in_sync']:
        job.log(f'WARNING: the processes ended with different weights: {digests} (trained: {model_digests})')
    if job.primary:
        output = Path(args.output)
        if complete:
            top1 = history[-1].get('ema_val_top1', history[-1]['val_top1'])
            set_export_cfg(final, job.data_cfg, (
                f'Trained with timm-sknet train: {job.num_epochs} epochs on '
                f'{args.data_dir or "timm-sknet synthetic shapes"}; validation top-1 {top1:.2f}%.'))
            save_checkpoint(output / 'model', final, None, job.class_names)
            summary['model_dir'] = str(output / 'model')
        _write_json(output / 'summary.json', summary)
        job.log(f'done in {wall_time:.1f}s' + (f'; model in {output / "model"}' if complete else
                                               f'; continue with --resume {output}'))
    return summary


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


def run_train(args: argparse.Namespace) -> Dict[str, Any]:
    """Run a training job described by ``args`` (from ``add_train_arguments``); return its summary.

    Raises ValueError / FileNotFoundError with a remedy for bad options or data.
    """
    job = build_job(args)
    job.log(f'{args.model}: {sum(p.numel() for p in job.model.parameters()) / 1e6:.3f}M params, '
            f'{len(job.class_names)} classes, {len(job.loader_train.dataset)} train / '
            f'{len(job.loader_val.dataset)} val images at {job.data_cfg["input_size"][1]}px, '
            f'{args.world_size} process(es) on {job.device.type}, batch {args.batch_size}/process, '
            f'{len(job.loader_train)} steps/epoch')
    last_epoch = job.num_epochs if args.stop_after_epoch is None else min(job.num_epochs, args.stop_after_epoch)
    start = time.perf_counter()
    for epoch in range(job.start_epoch, last_epoch):
        job.history.append(run_epoch(job, epoch))
        save_epoch(job, epoch)
        if job.distributed:
            dist.barrier()
    summary = finish(job, time.perf_counter() - start)
    if job.distributed:
        dist.barrier()
    return summary
