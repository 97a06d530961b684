"""The parts of a training job, each built from the command-line options: data, model, loaders, optimisation.

``timm_sknet.training.job`` assembles them into a job. Every part is timm's own factory (``create_dataset``,
``create_loader``, ``create_optimizer_v2``, ``create_scheduler_v2``, ``ModelEmaV3``, ``Mixup``, timm's losses);
what is ours is the synthetic data set and the choices between them.
"""
import argparse
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

import timm
from timm.data import Mixup, create_dataset, create_loader, create_transform, resolve_data_config
from timm.layers import convert_sync_batchnorm
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from ..data.synthetic import SyntheticShapes
from .arguments import SYNTHETIC_IMG_SIZE

__all__ = ['build_datasets', 'build_loaders', 'build_model', 'build_optimization', 'set_export_cfg']


def build_datasets(args: argparse.Namespace) -> Tuple[Any, Any, List[str]]:
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
    for split, dataset in ((args.train_split, train), (args.val_split, val)):
        if Path(dataset.reader.root) == root:  # timm falls back to the whole folder when a split has none
            raise FileNotFoundError(
                f'--data-dir {root} has no {split}/ folder: timm would use the whole folder for it (and validate on '
                f'training images); put the images in {args.train_split}/ and {args.val_split}/ class folders')
    classes = _class_names(train)
    if _class_names(val) != classes:
        raise ValueError(f'the classes of {args.val_split} ({_class_names(val)}) differ from those of '
                         f'{args.train_split} ({classes}); both splits need the same class folders')
    if len(classes) < 2:
        raise ValueError(f'{root} has {len(classes)} class folder(s) in {args.train_split}; need at least 2')
    return train, val, classes


def _class_names(dataset: Any) -> List[str]:
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


def build_model(args: argparse.Namespace, num_classes: int, device: torch.device) -> Tuple[nn.Module, Dict[str, Any]]:
    """The model on ``device`` (channels_last, SyncBatchNorm, grad checkpointing as asked) and its data config."""
    create_kwargs = dict(args.model_kwargs)
    if args.drop:
        create_kwargs['drop_rate'] = args.drop
    if args.drop_path:
        create_kwargs['drop_path_rate'] = args.drop_path
    model = timm.create_model(args.model, pretrained=args.pretrained, num_classes=num_classes, **create_kwargs)
    if args.grad_checkpointing:
        getattr(model, 'set_grad_checkpointing')(True)  # every timm model has it; nn.Module does not declare it
    data_cfg = _data_config(args, model)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.sync_bn and args.world_size > 1:
        model = convert_sync_batchnorm(model)  # plain BN (SK attention) and timm's BatchNormAct2d (paths)
    elif args.sync_bn and args.rank == 0:
        print('--sync-bn has no effect in a single process; ignored', flush=True)
    return model, data_cfg


def build_loaders(args: argparse.Namespace, train_ds: Any, val_ds: Any, data_cfg: Dict[str, Any],
                  device: torch.device) -> Tuple[Any, Any]:
    """timm's loader (augmentation, DistributedSampler) for training; an exact shard per process for validation."""
    per_rank = len(train_ds) // args.world_size
    if per_rank < args.batch_size:
        raise ValueError(f'{len(train_ds)} training images over {args.world_size} process(es) give less than one '
                         f'batch of {args.batch_size}; lower --batch-size or add data')
    use_prefetcher = device.type == 'cuda'
    loader_train = create_loader(
        train_ds, input_size=data_cfg['input_size'], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, scale=tuple(args.scale), ratio=tuple(args.ratio), hflip=args.hflip,
        color_jitter=args.color_jitter, auto_augment=args.aa, re_prob=args.reprob,
        interpolation=data_cfg['interpolation'], mean=data_cfg['mean'], std=data_cfg['std'],
        num_workers=args.workers, distributed=args.world_size > 1, pin_memory=use_prefetcher, device=device,
        use_prefetcher=use_prefetcher, persistent_workers=False)  # fresh workers: per-epoch seeding holds
    val_ds.transform = create_transform(
        data_cfg['input_size'], is_training=False, interpolation=data_cfg['interpolation'],
        mean=data_cfg['mean'], std=data_cfg['std'], crop_pct=data_cfg['crop_pct'],
        crop_mode=data_cfg.get('crop_mode'))
    val_shard = Subset(val_ds, range(args.rank, len(val_ds), args.world_size))
    loader_val = DataLoader(val_shard, batch_size=max(args.batch_size, 64), num_workers=args.workers)
    return loader_train, loader_val


def _criterion(args: argparse.Namespace, num_classes: int) -> Dict[str, Any]:
    if args.mixup or args.cutmix:
        mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.smoothing,
                      num_classes=num_classes)
        return dict(mixup=mixup, criterion=SoftTargetCrossEntropy())
    if args.smoothing:
        return dict(mixup=None, criterion=LabelSmoothingCrossEntropy(smoothing=args.smoothing))
    return dict(mixup=None, criterion=nn.CrossEntropyLoss())


def build_optimization(args: argparse.Namespace, model: nn.Module, updates_per_epoch: int, num_classes: int,
                       device: torch.device) -> Dict[str, Any]:
    """Optimizer, per-step scheduler, autocast context, grad scaler (float16 only), EMA, mixup and loss."""
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                    momentum=args.momentum, layer_decay=args.layer_decay)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr, min_lr=args.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    amp_dtype = getattr(torch, args.amp_dtype)
    amp_ctx = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if args.amp else nullcontext
    scaler = torch.amp.GradScaler(device.type) if args.amp and amp_dtype == torch.float16 else None
    ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup) if args.model_ema else None
    return dict(optimizer=optimizer, scheduler=scheduler, num_epochs=num_epochs, amp_ctx=amp_ctx, scaler=scaler,
                ema=ema, **_criterion(args, num_classes))


_WEIGHT_SOURCE_KEYS = ('url', 'file', 'state_dict', 'hf_hub_id', 'hf_hub_filename', 'source', 'tag', 'origin_url',
                       'notes', 'description', 'label_names', 'label_descriptions', 'label_offset',
                       'test_input_size', 'test_crop_pct', 'test_pool_size')


def set_export_cfg(model: nn.Module, data_cfg: Dict[str, Any], note: str) -> None:
    """Make ``model.pretrained_cfg`` describe *these* weights, not the ones the model started from."""
    cfg = {k: v for k, v in dict(getattr(model, 'pretrained_cfg')).items() if k not in _WEIGHT_SOURCE_KEYS}
    cfg.update({k: data_cfg[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')
                if k in data_cfg})
    feature_info = getattr(model, 'feature_info', None)
    reduction = feature_info[-1]['reduction'] if feature_info else 32
    cfg['pool_size'] = tuple(math.ceil(s / reduction) for s in cfg['input_size'][1:])
    cfg['num_classes'] = model.num_classes
    cfg['notes'] = (note,)
    setattr(model, 'pretrained_cfg', cfg)  # timm's attribute, which nn.Module does not declare
