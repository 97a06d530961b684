"""What several subcommands share: the model and runtime options, loading the model, optimizing it."""
import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, TypeAlias

import torch
from torch import nn

import timm

from ..hub.failures import hub_model_errors
from ..models.checkpoint import model_from_checkpoint
from .help_format import Parser

#: what ``add_subparsers`` returns (generic for type checkers only, hence the string)
SubParsers: TypeAlias = 'argparse._SubParsersAction[Parser]'


class CLIError(Exception):
    """A mistake in the command line (unknown model, checkpoint that does not fit, ...); the message says what to do."""


#: ``predict --workers``: DataLoader processes decoding images
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def add_model_args(p: argparse.ArgumentParser, default: str = 'sknet50', pretrained: bool = True,
                   published_by_default: bool = False) -> None:
    """``--model``, ``--checkpoint`` and, with ``pretrained``, ``--pretrained``; with ``published_by_default``
    (predict, serve) the published weights load unless ``--checkpoint`` or ``--random-weights`` is given
    (:func:`timm_sknet.cli.weights.use_published_weights`), and ``--pretrained`` is accepted and changes nothing."""
    p.add_argument('--model', default=default, help=f'registered model name, optionally with a tag (default: {default})')
    if published_by_default:
        p.add_argument('--pretrained', action='store_true',
                       help="the default: the model's published weights (kept so that older commands run)")
        p.add_argument('--random-weights', action='store_true',
                       help='an untrained model, for testing: its predictions mean nothing (said on stderr)')
    elif pretrained:
        p.add_argument('--pretrained', action='store_true', help="load the model's published pretrained weights")
    p.add_argument('--checkpoint', metavar='FILE',
                   help='local weights: .safetensors, or .pth/.pth.tar/.bin (read with weights_only=True)')


def check_model_name(name: str) -> None:
    """Raise CLIError, with the names there are, for a model timm does not know (checked without building it)."""
    from timm.models import split_model_name_tag
    arch, _ = split_model_name_tag(name)
    if not name.startswith(('hf-hub:', 'local-dir:')) and not timm.is_model(arch):
        raise CLIError(f'unknown model {name!r}; choose one of {", ".join(timm.list_models("sknet*"))} '
                       f'(pretrained tags: {", ".join(timm.list_pretrained("sknet*")) or "none"}), '
                       "or a Hub repo as 'hf-hub:org/repo', or an exported folder as 'local-dir:/path/to/folder'")


def load_model(name: str, pretrained: bool = False, checkpoint: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` in eval mode, or the model a local ``checkpoint`` fits, loaded strictly.

    Raises:
        CLIError: unknown model name.
        CheckpointError: a checkpoint that cannot be read or does not fit the model.
        FileNotFoundError: the checkpoint does not exist.
        WeightsError: pretrained weights could not be provided.
    """
    check_model_name(name)
    if checkpoint is not None:
        model = model_from_checkpoint(checkpoint, name, **kwargs)
    else:
        with hub_model_errors(name):  # hf-hub: timm fetches config.json itself, before any timm_sknet code
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    return model.eval()


def data_config(model: nn.Module, img_size: Optional[int]) -> Dict[str, Any]:
    """Preprocessing from the model's pretrained_cfg; ``img_size`` overrides the input size only."""
    from timm.data import resolve_data_config
    return resolve_data_config({'img_size': img_size} if img_size else {}, model=model)


def warn_random(args: argparse.Namespace) -> None:
    if getattr(args, 'random_weights', False):
        print(f'timm-sknet: note: {args.model} has random weights, as --random-weights asked: its predictions '
              'mean nothing', file=sys.stderr)
    elif not getattr(args, 'pretrained', False) and not args.checkpoint and not hasattr(args, 'random_weights'):
        print(f'timm-sknet: note: {args.model} has random weights (pass --pretrained or --checkpoint FILE)',
              file=sys.stderr)


def add_runtime_args(p: argparse.ArgumentParser, default_backend: Optional[str]) -> None:
    from ..inference import BACKENDS, PRECISIONS
    if default_backend is not None:
        p.add_argument('--backend', choices=('auto', *BACKENDS), default=default_backend,
                       help=f'runtime (default: {default_backend}; auto picks the fastest installed and says which)')
    p.add_argument('--precision', choices=PRECISIONS, default='fp32',
                   help='fp32 (default), bf16 (CPUs with native bf16, GPUs) or int8 (openvino, calibrated)')
    p.add_argument('--calibration-dir', default=None, metavar='DIR',
                   help='int8: a folder of images like yours (default: the synthetic shapes)')
    p.add_argument('--calibration-images', type=int, default=300, metavar='N',
                   help='int8: how many calibration images (default: 300)')


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument('--device', default='auto', metavar='DEVICE',
                   help='auto (the first CUDA GPU where there is one, else the CPU), cpu, cuda or cuda:N '
                        '(default: auto)')


def checked_device(args: argparse.Namespace) -> str:
    """``--device`` checked against this machine before any model is built (a missing GPU is a usage error)."""
    from ..inference import resolve_device
    try:
        return str(resolve_device(args.device))
    except ValueError as e:
        raise CLIError(f'--device: {e}') from None


def calibration_images(model: nn.Module, args: argparse.Namespace,
                 input_size: Sequence[int]) -> Optional[List[torch.Tensor]]:
    """int8: ``--calibration-images`` from ``--calibration-dir`` or the synthetic shapes; else None."""
    if args.precision != 'int8':
        return None
    from ..data.calibration import calibration_batches
    from ..inference import check_backend_precision
    check_backend_precision(args.backend, args.precision)  # before spending time on calibration images
    if args.calibration_dir is None:
        print('timm-sknet: note: int8 calibrated on the synthetic shapes; pass --calibration-dir with '
              'images like yours for a better int8 model', file=sys.stderr)
    return calibration_batches(model, args.calibration_dir, num_images=args.calibration_images, input_size=input_size)


def optimized(model: nn.Module, args: argparse.Namespace, input_size: Sequence[int]) -> nn.Module:
    """``model`` through ``timm_sknet.inference.optimize`` at ``--backend`` / ``--precision``."""
    from ..inference import BackendUnavailable, OptimizationError, optimize
    try:
        calibration = calibration_images(model, args, input_size)
        optimized = optimize(model, args.backend, args.precision, input_size=input_size, calibration=calibration)
    except (BackendUnavailable, OptimizationError) as e:
        raise CLIError(str(e)) from None
    say_what_runs(optimized)
    return optimized


def say_what_runs(optimized: nn.Module) -> None:
    """One stderr line: the backend ``optimize`` chose, why, and its settings."""
    print(f'timm-sknet: {optimized.backend} at {optimized.precision} ({optimized.reason}): {optimized.description}',
          file=sys.stderr)
