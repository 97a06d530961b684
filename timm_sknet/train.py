"""``timm-sknet train``: train or fine-tune any sknet on an ImageFolder or on the built-in synthetic shapes.

One process on CPU or GPU, or many with ``torchrun`` (DistributedDataParallel: gloo on CPU, nccl on
GPU). Data, augmentation, optimizer, scheduler, EMA and losses are timm's own factories, so every timm
option name means what it means in timm's ``train.py``.

Output folder::

    checkpoint/   config.json + model.safetensors (Hub layout) + training_state.pt, after every epoch
    model/        the final weights in Hub layout (EMA weights with --model-ema): load them with
                  timm.create_model('local-dir:<output>/model', pretrained=True)
    metrics.csv   one row per epoch
    summary.json  final metrics, timing, and the weight digest of every process

Resuming (``--resume <output or checkpoint folder>``) restores weights, optimizer, scheduler, EMA, grad
scaler and epoch. Each epoch's randomness (shuffling, augmentation, drop-path) is seeded from
``(--seed, epoch, rank)`` and loader workers are not kept across epochs, so a resumed run continues
exactly as the uninterrupted run would have (bit-exact on CPU with a fixed thread count).
"""
import argparse
import csv
import hashlib
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

import timm
from timm.data import Mixup, create_dataset, create_loader, create_transform, resolve_data_config
from timm.layers import convert_sync_batchnorm
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, ParseKwargs, dispatch_clip_grad, distribute_bn

from .synthetic_data import CLASSES, DEFAULT_SCALE_RANGE, SyntheticShapes
from .train_checkpoint import load_checkpoint, resolve_resume_path, save_checkpoint

__all__ = ['add_train_arguments', 'run_train', 'state_digest', 'main']

SYNTHETIC_IMG_SIZE = 64


# ----------------------------------------------------------------------------------------------------
# arguments


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training options to ``parser`` (the ``train`` subcommand uses this)."""
    g = parser.add_argument_group('model')
    g.add_argument('--model', default='sknet_tiny',
                   help='any timm model name, e.g. sknet50, or hf-hub:/local-dir: sources (default: sknet_tiny)')
    g.add_argument('--pretrained', action='store_true',
                   help='start from the pretrained weights of --model (fine-tuning); the classifier is '
                        'replaced when the number of classes differs')
    g.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, metavar='KEY=VALUE',
                   help='extra timm.create_model kwargs, e.g. channels="(16,32,64,128)" layers="(1,1,1,1)"')
    g.add_argument('--drop', type=float, default=0.0, help='classifier dropout rate')
    g.add_argument('--drop-path', type=float, default=0.0, help='stochastic depth rate')
    g.add_argument('--grad-checkpointing', action='store_true', help='trade compute for activation memory')
    g.add_argument('--channels-last', action='store_true', help='channels_last memory format')

    g = parser.add_argument_group('data')
    g.add_argument('--data-dir', default=None,
                   help='ImageFolder root with train/ and validation/ (or val/) class folders; '
                        'omit to train on the built-in synthetic shapes')
    g.add_argument('--train-split', default='train')
    g.add_argument('--val-split', default='validation')
    g.add_argument('--synthetic-train-size', type=int, default=8000)
    g.add_argument('--synthetic-val-size', type=int, default=1000)
    g.add_argument('--synthetic-classes', type=int, default=len(CLASSES), help=f'2..{len(CLASSES)} shapes')
    g.add_argument('--synthetic-seed', type=int, default=0, help='seed of the synthetic images')
    g.add_argument('--synthetic-scale-range', type=float, nargs=2, default=DEFAULT_SCALE_RANGE, metavar=('MIN', 'MAX'),
                   help='object size range as a fraction of the image side')
    g.add_argument('--img-size', type=int, default=None,
                   help=f'input size (default: the model\'s pretrained_cfg; {SYNTHETIC_IMG_SIZE} for synthetic data)')
    g.add_argument('--crop-pct', type=float, default=None, help='eval centre-crop fraction (synthetic: 1.0)')
    g.add_argument('--interpolation', default=None, help='resize interpolation (default: the model\'s)')
    g.add_argument('--mean', type=float, nargs=3, default=None, metavar=('R', 'G', 'B'))
    g.add_argument('--std', type=float, nargs=3, default=None, metavar=('R', 'G', 'B'))
    g.add_argument('--workers', type=int, default=1, help='data loader worker processes per training process')

    g = parser.add_argument_group('augmentation and regularisation (timm names)')
    g.add_argument('--no-aug', action='store_true', help='no training augmentation')
    g.add_argument('--scale', type=float, nargs=2, default=(0.08, 1.0), metavar=('MIN', 'MAX'),
                   help='RandomResizedCrop area range')
    g.add_argument('--ratio', type=float, nargs=2, default=(3. / 4., 4. / 3.), metavar=('MIN', 'MAX'))
    g.add_argument('--hflip', type=float, default=0.5)
    g.add_argument('--color-jitter', type=float, default=0.4)
    g.add_argument('--aa', default=None, help='AutoAugment policy, e.g. rand-m9-mstd0.5')
    g.add_argument('--reprob', type=float, default=0.0, help='random erasing probability')
    g.add_argument('--mixup', type=float, default=0.0, help='mixup alpha (0 = off)')
    g.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha (0 = off)')
    g.add_argument('--smoothing', type=float, default=0.1, help='label smoothing')

    g = parser.add_argument_group('optimisation')
    g.add_argument('--epochs', type=int, default=10)
    g.add_argument('--batch-size', '-b', type=int, default=64, help='batch size per process')
    g.add_argument('--opt', default='adamw', help='any timm optimizer name (default: adamw)')
    g.add_argument('--lr', type=float, default=1e-3, help='peak learning rate')
    g.add_argument('--weight-decay', type=float, default=0.05)
    g.add_argument('--momentum', type=float, default=0.9)
    g.add_argument('--layer-decay', type=float, default=None, help='layer-wise lr decay (fine-tuning)')
    g.add_argument('--clip-grad', type=float, default=None, help='gradient norm clipping')
    g.add_argument('--sched', default='cosine', help='any timm scheduler name (default: cosine)')
    g.add_argument('--warmup-epochs', type=int, default=1)
    g.add_argument('--warmup-lr', type=float, default=1e-5)
    g.add_argument('--min-lr', type=float, default=1e-5)
    g.add_argument('--model-ema', action='store_true', help='keep an EMA of the weights; it is what gets exported')
    g.add_argument('--model-ema-decay', type=float, default=0.998)
    g.add_argument('--model-ema-warmup', action='store_true',
                   help='ramp the EMA decay up from 0 (timm ModelEmaV3 use_warmup) so short runs forget the init')
    g.add_argument('--amp', action='store_true', help='mixed precision with torch.autocast')
    g.add_argument('--amp-dtype', default='bfloat16', choices=('bfloat16', 'float16'),
                   help='autocast dtype (bfloat16 works on CPU and recent GPUs; float16 adds a grad scaler)')

    g = parser.add_argument_group('run')
    g.add_argument('--output', default='output/train', help='output folder (default: output/train)')
    g.add_argument('--resume', default=None, help='output or checkpoint folder of a run to continue')
    g.add_argument('--stop-after-epoch', type=int, default=None,
                   help='end this run after that epoch (for time-limited jobs); continue it with --resume')
    g.add_argument('--seed', type=int, default=42)
    g.add_argument('--device', default=None, help='cpu, cuda, cuda:1, ... (default: cuda if available)')
    g.add_argument('--sync-bn', action='store_true',
                   help='synchronise BatchNorm statistics across processes (GPU only; on CPU the '
                        'statistics are averaged across processes after every epoch instead)')
    g.add_argument('--log-interval', type=int, default=50, help='log every N steps (0 = per epoch only)')
    return parser


# ----------------------------------------------------------------------------------------------------
# processes


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def primary(self) -> bool:
        return self.rank == 0


def _setup_processes(device_arg: Optional[str]) -> Tuple[_Dist, torch.device]:
    """Read torchrun's environment, pick the device, and join the process group when there is one."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    info = _Dist(int(os.environ.get('RANK', '0')), world_size, int(os.environ.get('LOCAL_RANK', '0')))
    if device_arg is None:
        device_arg = 'cuda' if torch.cuda.is_available() else 'cpu'
    device = torch.device(device_arg)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError('--device cuda was asked for, but torch sees no CUDA device; use --device cpu')
        if info.enabled:
            device = torch.device('cuda', info.local_rank)
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo', init_method='env://')
    return info, device


def _log(info: _Dist, message: str) -> None:
    if info.primary:
        print(message, flush=True)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed % 2 ** 32)
    except ImportError:  # numpy is optional for us; timm's Mixup needs it
        pass


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Distinct, reproducible seed per (run seed, epoch, process)."""
    return (seed * 1_000_003 + epoch) * 1_009 + rank


# ----------------------------------------------------------------------------------------------------
# data


def _build_datasets(args: argparse.Namespace):
    """(train, validation, class names); the synthetic set is used when no --data-dir is given."""
    if args.data_dir is None:
        kw = dict(image_size=args.img_size or SYNTHETIC_IMG_SIZE, seed=args.synthetic_seed,
                  num_classes=args.synthetic_classes, scale_range=tuple(args.synthetic_scale_range))
        train = SyntheticShapes(args.synthetic_train_size, split='train', **kw)
        val = SyntheticShapes(args.synthetic_val_size, split='validation', **kw)
        return train, val, list(train.classes)
    root = Path(args.data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f'--data-dir {root} is not a folder; give an ImageFolder root '
                                f'(with {args.train_split}/ and {args.val_split}/ class folders)')
    train = create_dataset('', root=str(root), split=args.train_split, is_training=True)
    val = create_dataset('', root=str(root), split=args.val_split, is_training=False)
    classes = _class_names(train)
    if _class_names(val) != classes:
        raise ValueError(f'the classes of {args.val_split} ({_class_names(val)}) differ from those of '
                         f'{args.train_split} ({classes}); both splits need the same class folders')
    if len(classes) < 2:
        raise ValueError(f'{root} has {len(classes)} class folder(s) in {args.train_split}; need at least 2')
    return train, val, classes


def _class_names(dataset) -> List[str]:
    class_to_idx = getattr(getattr(dataset, 'reader', None), 'class_to_idx', None)
    if not class_to_idx:
        raise ValueError(f'cannot read class names from {dataset!r}; expected an ImageFolder-style dataset')
    return [name for name, _ in sorted(class_to_idx.items(), key=lambda kv: kv[1])]


def _data_config(args: argparse.Namespace, model: nn.Module) -> Dict[str, Any]:
    overrides: Dict[str, Any] = {}
    img_size = args.img_size or (SYNTHETIC_IMG_SIZE if args.data_dir is None else None)
    if img_size:
        overrides['input_size'] = (3, img_size, img_size)
    crop_pct = args.crop_pct if args.crop_pct is not None else (1.0 if args.data_dir is None else None)
    for key, value in (('crop_pct', crop_pct), ('interpolation', args.interpolation),
                       ('mean', args.mean), ('std', args.std)):
        if value is not None:
            overrides[key] = tuple(value) if isinstance(value, list) else value
    return resolve_data_config(overrides, model=model)


# ----------------------------------------------------------------------------------------------------
# model export metadata


_WEIGHT_SOURCE_KEYS = ('url', 'file', 'state_dict', 'hf_hub_id', 'hf_hub_filename', 'source', 'tag', 'origin_url',
                       'notes', 'description', 'label_names', 'label_descriptions', 'label_offset',
                       'test_input_size', 'test_crop_pct', 'test_pool_size')


def _set_export_cfg(model: nn.Module, data_cfg: Dict[str, Any], note: str) -> None:
    """Make ``model.pretrained_cfg`` describe *these* weights, not the ones the model started from."""
    cfg = {k: v for k, v in dict(model.pretrained_cfg).items() if k not in _WEIGHT_SOURCE_KEYS}
    cfg.update({k: data_cfg[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')
                if k in data_cfg})
    reduction = model.feature_info[-1]['reduction'] if getattr(model, 'feature_info', None) else 32
    cfg['pool_size'] = tuple(math.ceil(s / reduction) for s in cfg['input_size'][1:])
    cfg['num_classes'] = model.num_classes
    cfg['notes'] = (note,)
    model.pretrained_cfg = cfg


def state_digest(model: nn.Module) -> str:
    """sha256 over every tensor of the state dict (names, dtypes, shapes, bytes): equal iff identical."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------
# loops


def _evaluate(model: nn.Module, loader, device: torch.device, amp_ctx, info: _Dist) -> Tuple[float, float]:
    """(mean loss, top-1 %) over the whole validation set, summed across processes."""
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
    if info.enabled:
        dist.all_reduce(totals)
    loss_sum, correct, count = totals.tolist()
    return loss_sum / max(count, 1), 100.0 * correct / max(count, 1)


def _validate_args(args: argparse.Namespace, info: _Dist, device: torch.device) -> None:
    if args.batch_size < 2:
        raise ValueError(f'--batch-size must be >= 2 per process (BatchNorm in the SK attention needs more '
                         f'than one sample per batch), got {args.batch_size}')
    if (args.mixup or args.cutmix) and args.batch_size % 2:
        raise ValueError(f'--mixup/--cutmix need an even --batch-size, got {args.batch_size}')
    if args.epochs < 1:
        raise ValueError(f'--epochs must be >= 1, got {args.epochs}')
    if args.sync_bn and info.enabled and device.type == 'cpu':
        raise ValueError(
            '--sync-bn needs GPU processes: torch.nn.SyncBatchNorm does not run on CPU. Drop --sync-bn; on '
            'CPU the BatchNorm statistics are averaged across processes after every epoch.')
    if args.amp and args.amp_dtype == 'float16' and device.type == 'cpu':
        raise ValueError('--amp-dtype float16 is for GPUs; use --amp-dtype bfloat16 on CPU')


def run_train(args: argparse.Namespace) -> Dict[str, Any]:
    """Run a training job described by ``args`` (from ``add_train_arguments``); return its summary.

    Raises ValueError / FileNotFoundError with a remedy for bad options or data.
    """
    info, device = _setup_processes(args.device)
    _validate_args(args, info, device)
    output = Path(args.output)
    _seed_everything(args.seed)

    train_ds, val_ds, class_names = _build_datasets(args)
    num_classes = len(class_names)
    create_kwargs = dict(args.model_kwargs)
    if args.drop:
        create_kwargs['drop_rate'] = args.drop
    if args.drop_path:
        create_kwargs['drop_path_rate'] = args.drop_path
    model = timm.create_model(args.model, pretrained=args.pretrained, num_classes=num_classes, **create_kwargs)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    data_cfg = _data_config(args, model)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.sync_bn and info.enabled:
        model = convert_sync_batchnorm(model)  # plain BN (SK attention) and timm's BatchNormAct2d (paths)
    elif args.sync_bn:
        _log(info, '--sync-bn has no effect in a single process; ignored')
    num_params = sum(p.numel() for p in model.parameters())

    # data: timm's loader (augmentation, DistributedSampler) for training; an exact shard for validation
    per_rank = len(train_ds) // info.world_size
    if per_rank < args.batch_size:
        raise ValueError(f'{len(train_ds)} training images over {info.world_size} process(es) give less than one '
                         f'batch of {args.batch_size}; lower --batch-size or add data')
    use_prefetcher = device.type == 'cuda'
    loader_train = create_loader(
        train_ds, input_size=data_cfg['input_size'], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, scale=tuple(args.scale), ratio=tuple(args.ratio), hflip=args.hflip,
        color_jitter=args.color_jitter, auto_augment=args.aa, re_prob=args.reprob,
        interpolation=data_cfg['interpolation'], mean=data_cfg['mean'], std=data_cfg['std'],
        num_workers=args.workers, distributed=info.enabled, pin_memory=use_prefetcher, device=device,
        use_prefetcher=use_prefetcher, persistent_workers=False)  # fresh workers: per-epoch seeding holds
    val_ds.transform = create_transform(
        data_cfg['input_size'], is_training=False, interpolation=data_cfg['interpolation'],
        mean=data_cfg['mean'], std=data_cfg['std'], crop_pct=data_cfg['crop_pct'],
        crop_mode=data_cfg.get('crop_mode'))
    val_shard = Subset(val_ds, range(info.rank, len(val_ds), info.world_size))
    loader_val = DataLoader(val_shard, batch_size=max(args.batch_size, 64), num_workers=args.workers)

    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                    momentum=args.momentum, layer_decay=args.layer_decay)
    updates_per_epoch = len(loader_train)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr, min_lr=args.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    amp_dtype = getattr(torch, args.amp_dtype)
    amp_ctx = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if args.amp else nullcontext
    scaler = torch.amp.GradScaler(device.type) if args.amp and amp_dtype == torch.float16 else None
    ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup) if args.model_ema else None

    mixup = None
    if args.mixup or args.cutmix:
        mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.smoothing,
                      num_classes=num_classes)
        criterion = SoftTargetCrossEntropy()
    elif args.smoothing:
        criterion = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()

    start_epoch, num_updates, history = 0, 0, []
    if args.resume:
        ckpt = resolve_resume_path(args.resume)
        state = load_checkpoint(ckpt, model)
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        if scaler is not None and state.get('scaler'):
            scaler.load_state_dict(state['scaler'])
        if ema is not None:
            if state.get('ema') is None:
                raise ValueError(f'{ckpt} has no EMA weights (it was trained without --model-ema); drop '
                                 f'--model-ema or start a new run')
            ema.module.load_state_dict(state['ema'])
        start_epoch, num_updates, history = state['epoch'], state['num_updates'], list(state['history'])
        _log(info, f'resumed from {ckpt} at epoch {start_epoch}, step {num_updates}')

    train_model = DistributedDataParallel(
        model, device_ids=[device.index] if device.type == 'cuda' else None) if info.enabled else model

    _log(info, f'{args.model}: {num_params / 1e6:.3f}M params, {num_classes} classes, '
               f'{len(train_ds)} train / {len(val_ds)} val images at {data_cfg["input_size"][1]}px, '
               f'{info.world_size} process(es) on {device.type}, batch {args.batch_size}/process, '
               f'{updates_per_epoch} steps/epoch')
    last_epoch = num_epochs if args.stop_after_epoch is None else min(num_epochs, args.stop_after_epoch)
    run_start = time.perf_counter()
    for epoch in range(start_epoch, last_epoch):
        epoch_start = time.perf_counter()
        _seed_everything(_epoch_seed(args.seed, epoch, info.rank))
        if info.enabled:
            loader_train.sampler.set_epoch(epoch)
        train_model.train()
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
        for step, (x, y) in enumerate(loader_train):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if mixup is not None:
                x, y = mixup(x, y)
            with amp_ctx():
                loss = criterion(train_model(x), y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if args.clip_grad:
                    scaler.unscale_(optimizer)
                    dispatch_clip_grad(model.parameters(), args.clip_grad)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if args.clip_grad:
                    dispatch_clip_grad(model.parameters(), args.clip_grad)
                optimizer.step()
            num_updates += 1
            scheduler.step_update(num_updates=num_updates)
            if ema is not None:
                ema.update(model, step=num_updates)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}: lower --lr, '
                                         f'add --clip-grad, or turn off --amp')
            loss_sum += torch.tensor([loss.item() * x.shape[0], x.shape[0]], dtype=torch.float64, device=device)
            if args.log_interval and (step + 1) % args.log_interval == 0:
                _log(info, f'  epoch {epoch + 1} step {step + 1}/{updates_per_epoch} loss {loss.item():.4f} '
                           f'lr {optimizer.param_groups[0]["lr"]:.2e}')
        if info.enabled:
            dist.all_reduce(loss_sum)
            if not args.sync_bn:  # every replica ends the epoch with the same (averaged) BN statistics
                distribute_bn(model, info.world_size, reduce=True)
                if ema is not None:
                    distribute_bn(ema.module, info.world_size, reduce=True)
        train_time = time.perf_counter() - epoch_start
        val_loss, val_top1 = _evaluate(model, loader_val, device, amp_ctx, info)
        row = dict(epoch=epoch + 1, train_loss=loss_sum[0].item() / loss_sum[1].item(), val_loss=val_loss,
                   val_top1=val_top1, lr=optimizer.param_groups[0]['lr'], train_time_s=train_time,
                   images_per_s=loss_sum[1].item() / train_time)
        if ema is not None:
            row['ema_val_loss'], row['ema_val_top1'] = _evaluate(ema.module, loader_val, device, amp_ctx, info)
        history.append(row)
        scheduler.step(epoch + 1, metric=val_top1)
        _log(info, f'epoch {epoch + 1}/{num_epochs} train_loss {row["train_loss"]:.4f} val_loss {val_loss:.4f} '
                   f'val_top1 {val_top1:.2f}%' + (f' ema_top1 {row["ema_val_top1"]:.2f}%' if ema else '') +
                   f' ({row["images_per_s"]:.0f} img/s, {train_time:.1f}s)')
        if info.primary:
            state = dict(epoch=epoch + 1, num_updates=num_updates, optimizer=optimizer.state_dict(),
                         scheduler=scheduler.state_dict(), scaler=scaler.state_dict() if scaler else None,
                         ema=ema.module.state_dict() if ema else None, history=history)
            _set_export_cfg(model, data_cfg, f'timm-sknet train checkpoint after epoch {epoch + 1}')
            save_checkpoint(output / 'checkpoint', model, state, class_names)
            _write_metrics(output / 'metrics.csv', history)
        if info.enabled:
            dist.barrier()
    train_wall = time.perf_counter() - run_start

    final = ema.module if ema is not None else model
    digest = state_digest(final)
    digests = [digest]
    if info.enabled:
        digests = [None] * info.world_size
        dist.all_gather_object(digests, digest)
    summary = dict(
        model=args.model, model_kwargs=args.model_kwargs, num_params=num_params, classes=class_names,
        data=args.data_dir or 'synthetic', epochs_run=len(history) and history[-1]['epoch'], epochs=num_epochs,
        complete=bool(history) and history[-1]['epoch'] == num_epochs, world_size=info.world_size,
        device=device.type, wall_time_s=train_wall, final=history[-1] if history else None,
        exported='ema' if ema is not None else 'model', state_digest=digest, rank_state_digests=digests,
        ranks_in_sync=len(set(digests)) == 1)
    if info.enabled and not summary['ranks_in_sync']:
        _log(info, f'WARNING: the processes ended with different weights: {digests}')
    if info.primary:
        if summary['complete']:
            top1 = history[-1].get('ema_val_top1', history[-1]['val_top1'])
            _set_export_cfg(final, data_cfg, (
                f'Trained with timm-sknet train: {num_epochs} epochs on '
                f'{args.data_dir or "timm-sknet synthetic shapes"}; validation top-1 {top1:.2f}%.'))
            save_checkpoint(output / 'model', final, None, class_names)
            summary['model_dir'] = str(output / 'model')
        _write_json(output / 'summary.json', summary)
        _log(info, f'done in {train_wall:.1f}s' + (f'; model in {output / "model"}' if summary['complete'] else
                                                   f'; continue with --resume {output}'))
    if info.enabled:
        dist.barrier()
    return summary


def _write_metrics(path: Path, history: Sequence[Dict[str, Any]]) -> None:
    tmp = path.with_name(f'.{path.name}.tmp')
    fields = list(dict.fromkeys(k for row in history for k in row))
    with open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m timm_sknet.train`` (the ``timm-sknet train`` subcommand does the same)."""
    import timm_sknet  # noqa: F401  (registers the models)
    parser = add_train_arguments(argparse.ArgumentParser(prog='timm-sknet train', description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    try:
        run_train(args)
    except (ValueError, FileNotFoundError) as e:
        print(f'timm-sknet train: error: {e}', file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == '__main__':
    sys.exit(main())
