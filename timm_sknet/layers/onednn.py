"""oneDNN's fused convolution kernels (conv + ReLU, conv + add + ReLU) for eager CPU inference.

PyTorch exposes them as the private operator ``torch.ops.mkldnn._convolution_pointwise`` (what inductor's
CPU backend emits). Being private, its signature may change between releases, so :func:`available` checks,
once per process, that both overloads have the argument lists this module calls them with and that a tiny
convolution through them equals ``F.conv2d``. If anything differs, every caller falls back to plain
modules, which give the same result more slowly.

The kernels pay off only in eager fp32 inference on channels_last inputs (on NCHW they reorder every
call and lose); :func:`runs_fused` says when that is the case.
"""
import functools
import logging
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['available', 'conv_act', 'conv_add_relu', 'runs_fused']

_logger = logging.getLogger(__name__)

# argument names of the two overloads, as this module calls them (torch 2.4 to 2.15)
_EXPECTED_ARGS = {
    'default': ['X', 'W', 'B', 'padding', 'stride', 'dilation', 'groups', 'attr', 'scalars', 'algorithm'],
    'binary': ['X', 'other', 'W', 'B', 'padding', 'stride', 'dilation', 'groups', 'binary_attr', 'alpha',
               'unary_attr', 'unary_scalars', 'unary_algorithm'],
}


def _schema_matches() -> bool:
    op = getattr(torch.ops.mkldnn, '_convolution_pointwise', None)
    if op is None:
        return False
    for overload, names in _EXPECTED_ARGS.items():
        schema = getattr(op, overload)._schema
        if [a.name for a in schema.arguments] != names:
            _logger.info('oneDNN fast path off: %s has signature %s', overload, schema)
            return False
    return True


def _probe_matches() -> bool:
    """Run both overloads on a tiny channels_last input and compare with plain torch."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 5, 5, generator=g).contiguous(memory_format=torch.channels_last)
    other = torch.randn(1, 4, 5, 5, generator=g).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(4, 4, 3, padding=1).requires_grad_(False)
    with torch.no_grad(), torch.autocast('cpu', enabled=False):  # the first check may come from inside autocast
        ref = F.relu(conv(x))
        ref_add = F.relu(conv(x) + other)
        got = conv_act(x, conv, 'relu')
        got_add = conv_add_relu(x, other, conv)
    return bool(torch.allclose(got, ref, atol=1e-5) and torch.allclose(got_add, ref_add, atol=1e-5))


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether the fused kernels exist here with the expected signature and results (checked once)."""
    try:
        if not torch.backends.mkldnn.is_available() or not _schema_matches():
            return False
        return _probe_matches()
    except Exception as err:  # noqa: BLE001  (a private op may fail in any way: fall back, never break)
        _logger.info('oneDNN fast path off: %s: %s', type(err).__name__, err)
        return False


@torch.jit.unused
def runs_fused(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where the fused kernels should run: eager CPU fp32 inference on a channels_last input.

    Not while anything records a graph (TorchScript, tracing / ONNX export, FX, ``torch.compile``), not
    under autocast (the plain modules follow autocast's dtype rules, these kernels would not), and not
    when a gradient is needed.
    """
    if isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            and torch.backends.mkldnn.enabled and not torch.is_autocast_enabled('cpu')
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and available())


def _conv_args(conv: nn.Conv2d) -> List:
    return [conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups]


@torch.jit.unused
def conv_act(x: torch.Tensor, conv: nn.Conv2d, post_op: str) -> torch.Tensor:
    """``conv(x)`` followed by ``post_op`` ('relu' or 'none') in one oneDNN kernel."""
    return torch.ops.mkldnn._convolution_pointwise(x, *_conv_args(conv), post_op, [], '')


@torch.jit.unused
def conv_add_relu(x: torch.Tensor, other: torch.Tensor, conv: nn.Conv2d,
                  alpha: Optional[float] = None) -> torch.Tensor:
    """``relu(conv(x) + other)`` in one oneDNN kernel."""
    return torch.ops.mkldnn._convolution_pointwise.binary(x, other, *_conv_args(conv), 'add', alpha, 'relu', [], '')
