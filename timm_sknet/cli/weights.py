"""Which weights ``predict`` and ``serve`` run: a model's published weights unless others are asked for, and what
identifies the weights a run used (for the manifest of ``predict --output``)."""
import argparse
import os
from pathlib import Path
from typing import Any, Dict

from torch import nn

import timm

from ..file_io import sha256_file
from ..hub.provenance import tensor_digest
from .arguments import CLIError

__all__ = ['has_published_weights', 'use_published_weights', 'weights_identity']


def has_published_weights(name: str) -> bool:
    """A Hub repo or exported folder, or a registered name (optionally tagged) whose pretrained_cfg names weights.
    An unknown name is True here: loading it says it is unknown."""
    if name.startswith(('hf-hub:', 'local-dir:')):
        return True
    arch, _ = timm.models.split_model_name_tag(name)
    cfg = timm.models.get_pretrained_cfg(name) if timm.is_model(arch) else None
    return cfg is None or bool(cfg.has_weights)


def use_published_weights(args: argparse.Namespace) -> bool:
    """True: load ``--model``'s published weights (the default); False: ``--checkpoint`` or ``--random-weights``.

    Raises:
        CLIError: before anything loads, when the model has no published weights and neither was given, or both
            were.
    """
    if args.checkpoint and args.random_weights:
        raise CLIError('--checkpoint FILE and --random-weights exclude each other: pass one')
    if args.checkpoint or args.random_weights:
        return False
    if not has_published_weights(args.model):
        with_weights = ', '.join(timm.list_pretrained('sknet*'))
        raise CLIError(f'{args.model} has no published weights: pass --checkpoint FILE (weights you trained), or '
                       f'--random-weights for an untrained model (its predictions mean nothing), or choose a model '
                       f'that has weights ({with_weights})')
    return True


def weights_identity(model: nn.Module, args: argparse.Namespace, pretrained: bool) -> Dict[str, Any]:
    """``{checkpoint, sha256}``; ``{pretrained, sha256}``: the tag loaded and the sha256 of its weights file (None
    when timm loaded them from a URL or cache this package does not see); or ``{random: digest of the tensors}``:
    each start draws other random weights, so a run with random weights never resumes into another's output."""
    if args.checkpoint:
        return {'checkpoint': str(Path(args.checkpoint).resolve()), 'sha256': sha256_file(args.checkpoint)}
    if not pretrained:
        return {'random': tensor_digest(model)}
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    arch, tag = timm.models.split_model_name_tag(args.model)
    name = args.model if args.model.startswith(('hf-hub:', 'local-dir:')) else f'{arch}.{tag or cfg.get("tag")}'
    file = cfg.get('file')
    return {'pretrained': name, 'sha256': sha256_file(file) if file and os.path.isfile(file) else None}
