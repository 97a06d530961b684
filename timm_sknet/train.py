"""Train or fine-tune an SKNet: ``python -m timm_sknet.train`` (and ``timm-sknet train``).

One process on a CPU or GPU, or many under ``torchrun`` (DDP, optional SyncBatchNorm). timm supplies the
data pipeline (``create_dataset``, ``create_transform``), optimizer (``create_optimizer_v2``), scheduler
(``create_scheduler_v2``, stepped per epoch) and EMA (``ModelEmaV3``). Every epoch, rank 0 writes
``OUTPUT/last/`` as a Hub folder (``config.json`` + ``model.safetensors`` + card, loadable with
``timm.create_model('local-dir:OUTPUT/last', pretrained=True)``) holding also ``train_state.pt``
(optimizer, scheduler, epoch, EMA, GradScaler), and ``OUTPUT/ema/`` with the EMA weights. ``--resume OUTPUT/last``
continues at the next epoch. Randomness is re-seeded from ``(seed, epoch, rank)`` at every epoch, so a resumed
run follows the same trajectory as an uninterrupted one.
"""
import argparse
import ast
import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

import timm
from timm.data import create_dataset, create_transform, resolve_data_config
from timm.layers import convert_sync_batchnorm
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from . import sknet_models  # noqa: F401  (registers the sknet architectures)
from .errors import WeightsError
from .hub_format import _replace_dir, export_hub_folder
from .hub_weights import WEIGHTS_FILENAME
from .synthetic_data import CLASSES, SyntheticShapes

__all__ = ['add_train_arguments', 'run_train', 'main', 'parse_model_kwargs', 'state_digest']

TRAIN_STATE = 'train_state.pt'
SYNTHETIC_IMAGE_SIZE = 64


def parse_model_kwargs(items: Sequence[str]) -> Dict[str, Any]:
    """``['layers=(1,1,1,1)', 'num_classes=4']`` -> dict; values are Python literals, else plain strings."""
    kwargs = {}
    for item in items or ():
        key, sep, value = item.partition('=')
        if not sep or not key.isidentifier():
            raise ValueError(f'--model-kwargs expects key=value pairs such as layers=(1,1,1,1), got {item!r}')
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value  # e.g. stem_type=deep
    return kwargs


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training options to ``parser`` (shared by ``timm-sknet train`` and ``python -m timm_sknet.train``)."""
    g = parser.add_argument_group('model')
    g.add_argument('--model', default='sknet18', help='registered sknet name (default: sknet18)')
    g.add_argument('--model-kwargs', nargs='*', default=[], metavar='K=V',
                   help='extra timm.create_model arguments as Python literals, e.g. layers=(1,1,1,1) num_classes=4')
    g.add_argument('--pretrained', action='store_true', help='start from the pretrained weights (head resized)')
    g.add_argument('--grad-checkpointing', action='store_true', help='recompute activations to save memory')
    g = parser.add_argument_group('data (one of --data-dir / --synthetic)')
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument('--data-dir', metavar='DIR', help='ImageFolder root with train/ and validation/ (or val/)')
    src.add_argument('--synthetic', type=int, metavar='N',
                     help='built-in SyntheticShapes: N training and N//4 validation images')
    g.add_argument('--image-size', type=int, default=None,
                   help=f'training/eval resolution (default: the model\'s, {SYNTHETIC_IMAGE_SIZE} for --synthetic)')
    g.add_argument('--no-aug', action='store_true', help='no training augmentation (eval transform for training)')
    g.add_argument('--workers', type=int, default=2, help='data loader processes per rank (default: 2)')
    g = parser.add_argument_group('optimisation')
    g.add_argument('--epochs', type=int, default=10, help='total epochs of the schedule (default: 10)')
    g.add_argument('--epochs-per-run', type=int, default=None, metavar='N',
                   help='stop after N epochs in this invocation, leaving a resumable checkpoint (for time-limited jobs)')
    g.add_argument('--batch-size', type=int, default=32, help='per-process batch size (default: 32)')
    g.add_argument('--lr', type=float, default=None, help='learning rate (default: timm\'s for --opt)')
    g.add_argument('--opt', default='sgd', help='timm optimizer name: sgd, adamw, lamb, ... (default: sgd)')
    g.add_argument('--weight-decay', type=float, default=1e-4, help='(default: 1e-4)')
    g.add_argument('--momentum', type=float, default=0.9, help='(default: 0.9)')
    g.add_argument('--sched', default='cosine',
                   help='timm scheduler, stepped per epoch: cosine, step, multistep, poly, tanh, plateau, or none')
    g.add_argument('--warmup-epochs', type=int, default=0, help='(default: 0)')
    g.add_argument('--min-lr', type=float, default=0.0, help='(default: 0)')
    g.add_argument('--amp', action='store_true',
                   help='mixed precision: bfloat16 autocast on CPU, float16 autocast + GradScaler on CUDA')
    g.add_argument('--model-ema', action='store_true', help='keep an EMA of the weights (written to OUTPUT/ema/)')
    g.add_argument('--model-ema-decay', type=float, default=0.998, help='(default: 0.998)')
    g.add_argument('--seed', type=int, default=0, help='seeds init, data order, augmentation, synthetic data')
    g = parser.add_argument_group('run')
    g.add_argument('--output', metavar='DIR', required=True, help='checkpoint folder (last/, ema/, log.jsonl)')
    g.add_argument('--resume', metavar='DIR', help='a last/ folder written by this command: continue its training')
    g.add_argument('--device', default=None, help='cpu, cuda, cuda:1, ... (default: cuda if available)')
    g.add_argument('--sync-bn', action='store_true', help='SyncBatchNorm across processes (CUDA, under torchrun)')
    g.add_argument('--write-state-digest', metavar='DIR', help=argparse.SUPPRESS)  # tests: DIR/rank{r}.sha256
    return parser


# ---------------------------------------------------------------------------------------------- distributed

def _init_distributed(device_arg: Optional[str]) -> Tuple[torch.device, int, int]:
    """(device, rank, world_size); joins the process group when launched by torchrun."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    device = torch.device(device_arg or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if world_size > 1:
        if device.type == 'cuda':
            local_rank = int(os.environ.get('LOCAL_RANK', '0'))
            device = torch.device('cuda', local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo')
    return device, rank, world_size


def _all_reduce_sums(values: List[float], device: torch.device, world_size: int) -> List[float]:
    if world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _seed_all(seed: int, epoch: int, rank: int) -> int:
    """Re-seed python/torch RNGs from (seed, epoch, rank): a resumed epoch draws what an uninterrupted one would."""
    s = (seed * 1_000_003 + epoch * 1009 + rank) % (2 ** 63)
    random.seed(s)
    torch.manual_seed(s)
    return s


# ---------------------------------------------------------------------------------------------- data

def _datasets(args: argparse.Namespace, num_classes: Optional[int]) -> Tuple[Dataset, Dataset, int]:
    if args.synthetic is not None:
        n = num_classes if num_classes is not None else len(CLASSES)
        if args.synthetic < 4:
            raise ValueError(f'--synthetic N needs N >= 4 (N//4 validation images), got {args.synthetic}')
        size = args.image_size or SYNTHETIC_IMAGE_SIZE
        train = SyntheticShapes(args.synthetic, size, seed=args.seed, split='train', num_classes=n)
        val = SyntheticShapes(args.synthetic // 4, size, seed=args.seed, split='validation', num_classes=n)
        return train, val, n
    root = Path(args.data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f'--data-dir {root} is not a folder.')
    if not (root / 'train').is_dir() or not any((root / s).is_dir() for s in ('validation', 'val')):
        raise FileNotFoundError(
            f'--data-dir {root} needs train/ and validation/ (or val/) subfolders, one folder per class in each.')
    train = create_dataset('', root=str(root), split='train')
    val = create_dataset('', root=str(root), split='validation')
    classes = train.reader.class_to_idx
    if val.reader.class_to_idx != classes:
        raise ValueError(f'{root}: train/ and validation/ hold different class folders; they must match.')
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f'{root}: train/ or validation/ holds no images.')
    if num_classes is not None and num_classes != len(classes):
        raise ValueError(f'--model-kwargs num_classes={num_classes} but {root} has {len(classes)} classes; '
                         f'drop num_classes to use the dataset\'s.')
    return train, val, len(classes)


def _transforms(model: nn.Module, image_size: int, no_aug: bool):
    cfg = resolve_data_config({}, model=model)
    cfg['input_size'] = (cfg['input_size'][0], image_size, image_size)
    eval_tf = create_transform(**cfg, is_training=False)
    if no_aug:
        return eval_tf, eval_tf, cfg
    aug = {k: v for k, v in cfg.items() if k not in ('crop_pct', 'crop_mode')}
    # light: random crops keeping >= 50% of the area, flips; no colour jitter (colour is part of the shapes data)
    train_tf = create_transform(**aug, is_training=True, scale=(0.5, 1.0), hflip=0.5, color_jitter=None)
    return train_tf, eval_tf, cfg


# ---------------------------------------------------------------------------------------------- checkpoints

def state_digest(state_dict: Dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a state dict (order-independent)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f'{k}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _save_checkpoint(out: Path, model: nn.Module, ema: Optional[ModelEmaV3], state: Dict[str, Any],
                     data_config: Dict[str, Any], description: str) -> None:
    """OUTPUT/last/ (Hub folder + train_state.pt) replaced as a whole, then OUTPUT/ema/."""
    staging = out / '.last.staging'
    export_hub_folder(model, staging, data_config=data_config, overwrite=True, datasets=(),
                      tags=('fine-tuned',), description=description)
    tmp = staging / (TRAIN_STATE + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, staging / TRAIN_STATE)
    _replace_dir(staging, out / 'last')
    if ema is not None:
        export_hub_folder(ema.module, out / 'ema', data_config=data_config, overwrite=True, datasets=(),
                          tags=('fine-tuned', 'ema'), description=description + ' EMA of the weights.')


def _load_resume(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    from safetensors.torch import load_file
    if path.name != 'last' and (path / 'last').is_dir():
        path = path / 'last'  # accept the --output folder too
    weights, state = path / WEIGHTS_FILENAME, path / TRAIN_STATE
    if not weights.is_file() or not state.is_file():
        raise FileNotFoundError(f'--resume {path}: expected {WEIGHTS_FILENAME} and {TRAIN_STATE} there '
                                f'(the last/ folder this command writes into --output).')
    return load_file(str(weights)), torch.load(state, map_location='cpu', weights_only=False)


# ---------------------------------------------------------------------------------------------- loop

def _loader(ds: Dataset, args, shuffle: bool, world_size: int, rank: int, drop_last: bool) -> DataLoader:
    sampler = DistributedSampler(ds, world_size, rank, shuffle=shuffle, seed=args.seed,
                                 drop_last=drop_last) if world_size > 1 else None
    return DataLoader(ds, batch_size=args.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=args.workers, drop_last=drop_last, persistent_workers=False,
                      pin_memory=False)


def _evaluate(model: nn.Module, loader: DataLoader, device, autocast, world_size: int) -> Tuple[float, float]:
    """(mean loss, top-1 %) over the whole validation set, summed across ranks."""
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with autocast():
                logits = model(x)
            loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction='sum').item()
            correct += (logits.argmax(1) == y).sum().item()
            count += y.numel()
    loss_sum, correct, count = _all_reduce_sums([loss_sum, correct, count], device, world_size)
    return loss_sum / max(count, 1), 100.0 * correct / max(count, 1)


def run_train(args: argparse.Namespace) -> Dict[str, Any]:
    """Train as ``args`` say; returns the last epoch's metrics (identical on every rank)."""
    device, rank, world_size = _init_distributed(args.device)
    try:
        return _run(args, device, rank, world_size)
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _run(args: argparse.Namespace, device: torch.device, rank: int, world_size: int) -> Dict[str, Any]:
    if args.sync_bn and device.type != 'cuda':
        raise ValueError('--sync-bn needs CUDA devices (torch.nn.SyncBatchNorm has no CPU implementation); '
                         'drop it for CPU training.')
    if args.epochs < 1 or args.batch_size < 1:
        raise ValueError('--epochs and --batch-size must be >= 1.')
    log = print if rank == 0 else (lambda *a, **k: None)
    model_kwargs = parse_model_kwargs(args.model_kwargs)
    train_ds, val_ds, num_classes = _datasets(args, model_kwargs.pop('num_classes', None))

    _seed_all(args.seed, -1, 0)  # same initial weights on every rank
    model = timm.create_model(args.model, pretrained=args.pretrained, num_classes=num_classes, **model_kwargs)
    image_size = args.image_size or (SYNTHETIC_IMAGE_SIZE if args.synthetic else model.pretrained_cfg['input_size'][-1])
    train_tf, eval_tf, data_config = _transforms(model, image_size, args.no_aug)
    train_ds.transform, val_ds.transform = train_tf, eval_tf
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    # the weights we write are ours, not the tag's: keep preprocessing, drop the source weights' provenance
    model.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items()
                            if k not in ('tag', 'hf_hub_id', 'url', 'file', 'origin_url', 'notes')}

    resume_state = None
    if args.resume:
        weights, resume_state = _load_resume(Path(args.resume))
        model.load_state_dict(weights, strict=True)
    model.to(device)
    if args.sync_bn and world_size > 1:
        model = convert_sync_batchnorm(model)
    ema = ModelEmaV3(model, decay=args.model_ema_decay) if args.model_ema else None

    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                    momentum=args.momentum)
    train_loader = _loader(train_ds, args, True, world_size, rank, drop_last=True)
    val_loader = _loader(val_ds, args, False, world_size, rank, drop_last=False)
    if len(train_loader) == 0:
        raise ValueError(f'{len(train_ds)} training images make no full batch of {args.batch_size} per process '
                         f'({world_size} processes): lower --batch-size.')
    scheduler = None
    if args.sched != 'none':
        scheduler, _ = create_scheduler_v2(optimizer, sched=args.sched, num_epochs=args.epochs,
                                           warmup_epochs=args.warmup_epochs, min_lr=args.min_lr,
                                           step_on_epochs=True, updates_per_epoch=len(train_loader))
    use_scaler = args.amp and device.type == 'cuda'
    scaler = torch.amp.GradScaler('cuda') if use_scaler else None
    amp_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if args.amp else nullcontext()

    start_epoch = 0
    if resume_state is not None:
        optimizer.load_state_dict(resume_state['optimizer'])
        if scheduler is not None and resume_state.get('scheduler') is not None:
            if resume_state.get('epochs') == args.epochs and resume_state.get('sched') == args.sched:
                scheduler.load_state_dict(resume_state['scheduler'])
            else:
                log(f'note: schedule rebuilt for --epochs {args.epochs} --sched {args.sched} '
                    f'(the checkpoint was for {resume_state.get("epochs")} epochs, {resume_state.get("sched")})')
        if ema is not None:
            if resume_state.get('ema') is not None:
                ema.module.load_state_dict(resume_state['ema'])
            else:
                log('note: the checkpoint has no EMA; the EMA starts from the current weights')
        if scaler is not None and resume_state.get('scaler') is not None:
            scaler.load_state_dict(resume_state['scaler'])
        start_epoch = int(resume_state['epoch']) + 1
        log(f'resumed from {args.resume} at epoch {start_epoch + 1}')
        if scheduler is not None and start_epoch > 0:
            scheduler.step(start_epoch)
    if world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None)
    bare = model.module if isinstance(model, DistributedDataParallel) else model

    out = Path(args.output)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    end_epoch = args.epochs if args.epochs_per_run is None else min(args.epochs, start_epoch + args.epochs_per_run)
    metrics: Dict[str, Any] = {'epoch': start_epoch}
    if start_epoch >= args.epochs:
        log(f'nothing to do: the checkpoint already finished {args.epochs} epochs')
    steps_per_epoch = len(train_loader)
    log(f'training {args.model} ({sum(p.numel() for p in bare.parameters()) / 1e6:.2f} M params, '
        f'{num_classes} classes) on {len(train_ds)} images at {image_size}px, {world_size} process(es) on {device}, '
        f'{steps_per_epoch} steps/epoch')
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        _seed_all(args.seed, epoch, rank)
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        model.train()
        loss_sum, n_steps = 0.0, 0
        for step, (x, y) in enumerate(train_loader):
            x, y = x.to(device), y.to(device)
            with autocast():
                loss = nn.functional.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch + 1} step {step}: lower --lr.')
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            if ema is not None:
                ema.update(bare, step=epoch * steps_per_epoch + step + 1)
            loss_sum += loss.item()
            n_steps += 1
        loss_sum, n_steps = _all_reduce_sums([loss_sum, float(n_steps)], device, world_size)
        val_loss, val_top1 = _evaluate(model, val_loader, device, autocast, world_size)
        metrics = dict(epoch=epoch + 1, train_loss=loss_sum / n_steps, val_loss=val_loss, val_top1=val_top1,
                       lr=optimizer.param_groups[0]['lr'])
        if ema is not None:
            metrics['ema_val_loss'], metrics['ema_val_top1'] = _evaluate(ema.module, val_loader, device, autocast,
                                                                         world_size)
        if scheduler is not None:
            scheduler.step(epoch + 1, metric=val_top1)
        metrics['seconds'] = time.perf_counter() - t0
        if rank == 0:
            state = dict(epoch=epoch, epochs=args.epochs, sched=args.sched, model=args.model, args=vars(args),
                         optimizer=optimizer.state_dict(),
                         scheduler=scheduler.state_dict() if scheduler is not None else None,
                         ema=ema.module.state_dict() if ema is not None else None,
                         scaler=scaler.state_dict() if scaler is not None else None, metrics=metrics)
            _save_checkpoint(out, bare, ema, state, data_config,
                             f'{args.model} trained by timm-sknet train for {epoch + 1}/{args.epochs} epochs; '
                             f'val top-1 {val_top1:.2f}%.')
            with open(out / 'log.jsonl', 'a', encoding='utf-8') as f:
                f.write(json.dumps(metrics) + '\n')
        ema_text = f'  ema_val_top1 {metrics["ema_val_top1"]:6.2f}' if ema is not None else ''
        log(f'epoch {epoch + 1}/{args.epochs}  train_loss {metrics["train_loss"]:.4f}  '
            f'val_loss {val_loss:.4f}  val_top1 {val_top1:6.2f}{ema_text}  lr {metrics["lr"]:.3g}  '
            f'{metrics["seconds"]:.1f}s')
        if world_size > 1:
            dist.barrier()  # rank 0 has written the checkpoint before anyone moves on or exits

    if args.write_state_digest:
        d = Path(args.write_state_digest)
        d.mkdir(parents=True, exist_ok=True)
        (d / f'rank{rank}.sha256').write_text(state_digest(bare.state_dict()) + '\n')
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = add_train_arguments(argparse.ArgumentParser(
        prog='python -m timm_sknet.train', description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    try:
        run_train(args)
    except (ValueError, FileNotFoundError, WeightsError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
