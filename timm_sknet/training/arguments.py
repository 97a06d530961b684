"""Options of ``timm-sknet train`` (timm's option names where timm's ``train.py`` has one), and their checks."""
import argparse

import torch

from timm.utils import ParseKwargs

from ..data.synthetic import CLASSES, DEFAULT_SCALE_RANGE

__all__ = ['SYNTHETIC_IMG_SIZE', 'add_train_arguments', 'validate_args']

SYNTHETIC_IMG_SIZE = 64


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the training options to ``parser`` (the ``train`` subcommand uses this)."""
    for add in (_add_model_options, _add_data_options, _add_augmentation_options, _add_optimisation_options,
                _add_run_options):
        add(parser)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
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


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('data')
    g.add_argument('--data-dir', default=None,
                   help='ImageFolder root with train/ and validation/ (or val/) class folders; '
                        'omit to train on the built-in synthetic shapes')
    g.add_argument('--train-split', default='train', help='training folder under --data-dir')
    g.add_argument('--val-split', default='validation', help='validation folder under --data-dir')
    g.add_argument('--synthetic-train-size', type=int, default=8000, help='synthetic training images per epoch')
    g.add_argument('--synthetic-val-size', type=int, default=1000, help='synthetic validation images')
    g.add_argument('--synthetic-classes', type=int, default=len(CLASSES), help=f'2..{len(CLASSES)} shapes')
    g.add_argument('--synthetic-seed', type=int, default=0, help='seed of the synthetic images')
    g.add_argument('--synthetic-scale-range', type=float, nargs=2, default=DEFAULT_SCALE_RANGE, metavar=('MIN', 'MAX'),
                   help='object size range as a fraction of the image side')
    g.add_argument('--img-size', type=int, default=None,
                   help=f'input size (default: the model\'s pretrained_cfg; {SYNTHETIC_IMG_SIZE} for synthetic data)')
    g.add_argument('--crop-pct', type=float, default=None, help='eval centre-crop fraction (synthetic: 1.0)')
    g.add_argument('--interpolation', default=None, help='resize interpolation (default: the model\'s)')
    g.add_argument('--mean', type=float, nargs=3, default=None, metavar=('R', 'G', 'B'),
                   help='normalisation mean (default: the model\'s)')
    g.add_argument('--std', type=float, nargs=3, default=None, metavar=('R', 'G', 'B'),
                   help='normalisation std (default: the model\'s)')
    g.add_argument('--workers', type=int, default=1, help='data loader worker processes per training process')


def _add_augmentation_options(parser: argparse.ArgumentParser) -> None:
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


def _add_optimisation_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('optimisation')
    g.add_argument('--epochs', type=int, default=10, help='training epochs')
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


def _add_run_options(parser: argparse.ArgumentParser) -> None:
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


def validate_args(args: argparse.Namespace, world_size: int, device: torch.device) -> None:
    """Refuse option combinations that cannot train, saying what to change."""
    if args.batch_size < 2:
        raise ValueError(f'--batch-size must be >= 2 per process (BatchNorm in the SK attention needs more '
                         f'than one sample per batch), got {args.batch_size}')
    if (args.mixup or args.cutmix) and args.batch_size % 2:
        raise ValueError(f'--mixup/--cutmix need an even --batch-size, got {args.batch_size}')
    if args.epochs < 1:
        raise ValueError(f'--epochs must be >= 1, got {args.epochs}')
    if args.sync_bn and world_size > 1 and device.type == 'cpu':
        raise ValueError(
            '--sync-bn needs GPU processes: torch.nn.SyncBatchNorm does not run on CPU. Drop --sync-bn; on '
            'CPU the BatchNorm statistics are averaged across processes after every epoch.')
    if args.amp and args.amp_dtype == 'float16' and device.type == 'cpu':
        raise ValueError('--amp-dtype float16 is for GPUs; use --amp-dtype bfloat16 on CPU')
