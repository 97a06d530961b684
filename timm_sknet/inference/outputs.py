"""Model outputs as lists of tensors, and the one way the inference code compares two of them.

A classifier returns one tensor, a ``features_only`` model a list of feature maps, a feature pyramid
(:mod:`timm_sknet.detection`) a dict of them by level; exporters and runtimes see a list of named outputs either
way. Errors are relative to the largest reference value, so one
tolerance serves logits and feature maps of any scale.
"""
from collections import OrderedDict
from typing import Dict, List, Sequence, Union

import torch

__all__ = ['Outputs', 'as_list', 'output_names', 'relative_error', 'restore']

Outputs = Union[torch.Tensor, List[torch.Tensor], Dict[str, torch.Tensor]]


def as_list(out: Outputs) -> List[torch.Tensor]:
    """``[out]`` for a tensor, ``list(out)`` for a list or tuple of tensors, the values of a dict."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in out):
        return list(out)
    raise TypeError(f'expected a tensor or a list of tensors as model output, got {type(out).__name__}')


def output_names(out: Outputs) -> List[str]:
    """ONNX / runtime output names: ``output`` for a classifier, ``feature_0`` ... for a feature extractor,
    ``feature_<key>`` for a dict (a feature pyramid: ``feature_0`` ... ``feature_pool``)."""
    if isinstance(out, torch.Tensor):
        return ['output']
    return [f'feature_{key}' for key in (out if isinstance(out, dict) else range(len(out)))]


def restore(tensors: Sequence[torch.Tensor], like: Outputs) -> Outputs:
    """Give runtime outputs the structure of the PyTorch model's (one tensor, a list, or a dict by the same keys)."""
    if isinstance(like, dict):
        return OrderedDict(zip(like, tensors))
    return tensors[0] if isinstance(like, torch.Tensor) else list(tensors)


def relative_error(out: Outputs, ref: Outputs) -> float:
    """max |out - ref| over every output, divided by max |ref| (the scale the tolerances are stated in)."""
    outs, refs = as_list(out), as_list(ref)
    if [tuple(o.shape) for o in outs] != [tuple(r.shape) for r in refs]:
        raise RuntimeError(f'output shapes {[tuple(o.shape) for o in outs]} differ from the model\'s '
                           f'{[tuple(r.shape) for r in refs]}')
    diff = max(float((o.float() - r.float()).abs().max()) for o, r in zip(outs, refs))
    scale = max(float(r.float().abs().max()) for r in refs) or 1.0
    return diff / scale
