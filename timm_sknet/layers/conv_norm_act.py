"""timm's conv-BatchNorm-activation layer with its inference form, in which the BatchNorm is folded away.

:class:`FusableConvNormAct` is timm's ``ConvNormAct`` (same submodules, same state-dict keys, so timm's
checkpoints load unchanged) plus two things:

* ``fuse()``, which ``timm.utils.reparameterize_model`` calls while it walks the model: it returns a
  :class:`FusedConvAct` with the BatchNorm folded into the convolution;
* ``forward_add_relu(x, shortcut)``, ``relu(self(x) + shortcut)``, the tail of a residual block. The
  fused form runs it as one oneDNN kernel in eager CPU inference, so a block gets that speed-up by calling
  the same method on whatever form its layer is in, without asking which.

:func:`fold_sequential` folds the conv-BN pairs of a plain ``nn.Sequential`` (timm's downsample shortcuts
and deep stems), for the module that owns it.
"""
import copy
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import ConvNormAct

from . import onednn
from .batchnorm_fold import bn_act_parts, fold_batchnorm, is_batchnorm

__all__ = ['FusableConvNormAct', 'FusedConvAct', 'MATMUL_MAX_PIXELS', 'fold_sequential']

#: 1x1 convs over at most this many pixels (batch x H x W) run as a BLAS matrix product instead.
MATMUL_MAX_PIXELS = 1024


class FusedConvAct(nn.Module):
    """``conv`` (BatchNorm folded in, with bias), then optional drop, activation and anti-aliasing.

    The inference form of ``ConvNormAct``: the same output for the same input. In eager CPU inference a
    ReLU (or no activation) runs inside oneDNN's convolution as a post-op (see :mod:`.onednn`); anywhere
    else (autograd, TorchScript, ONNX export, ``torch.compile``, GPU, autocast) it runs the plain modules,
    which compilers fuse their own way.
    """

    def __init__(
            self,
            conv: nn.Conv2d,
            act: Optional[nn.Module] = None,
            drop: Optional[nn.Module] = None,
            aa: Optional[nn.Module] = None,
    ):
        super().__init__()
        self.conv = conv
        self.drop = drop if drop is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()
        self.aa = aa if aa is not None else nn.Identity()
        plain = (type(conv) is nn.Conv2d and conv.padding_mode == 'zeros' and not isinstance(conv.padding, str)
                 and type(self.drop) is nn.Identity)
        # oneDNN post-op for the activation: 'relu', 'none', or '' when this layer cannot run fused
        self.post_op = _post_op(self.act) if plain else ''
        # a 1x1 conv on a channels_last map is a matrix product over its pixels
        self.pointwise = (plain and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
                          and conv.padding == (0, 0) and conv.groups == 1)

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.aa(self.act(self.drop(self.conv(x))))
        if self.post_op != '' and onednn.runs_fused(x, self.conv.weight):
            return self.aa(self._forward_fused(x))
        return self.aa(self.act(self.drop(self.conv(x))))

    def forward_add_relu(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """``relu(self(x) + shortcut)``; one kernel where :meth:`_can_add_relu` allows."""
        if torch.jit.is_scripting():
            return torch.relu(self.forward(x) + shortcut)
        if self._can_add_relu(x, shortcut):
            if self._small_pointwise(x):
                return self._matmul(x, shortcut).relu_()
            return onednn.conv_add_relu(x, shortcut, self.conv)
        y = self.forward(x)
        y += shortcut
        return y.relu_()

    @torch.jit.unused
    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        if self._small_pointwise(x):
            y = self._matmul(x)
            return y.relu_() if self.post_op == 'relu' else y
        return onednn.conv_act(x, self.conv, self.post_op)

    @torch.jit.unused
    def _can_add_relu(self, x: torch.Tensor, shortcut: torch.Tensor) -> bool:
        return (self.post_op == 'none' and type(self.aa) is nn.Identity and shortcut.dtype == x.dtype
                and shortcut.is_contiguous(memory_format=torch.channels_last)
                and onednn.runs_fused(x, self.conv.weight))

    @torch.jit.unused
    def _small_pointwise(self, x: torch.Tensor) -> bool:
        # oneDNN's 1x1 kernels lose to a BLAS matrix product when few pixels feed many channels
        # (stage 4 at any batch, stage 3 at batch 1); measured on AVX2 CPUs with 1 and 2 threads
        return self.pointwise and x.shape[0] * x.shape[2] * x.shape[3] <= MATMUL_MAX_PIXELS

    @torch.jit.unused
    def _matmul(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The 1x1 conv as ``pixels x C_in @ C_in x C_out`` on the channels_last storage (no copies)."""
        n, _, h, w = x.shape
        c = self.conv
        rows = x.permute(0, 2, 3, 1).reshape(-1, c.in_channels)
        y = F.linear(rows, c.weight.reshape(c.out_channels, -1), c.bias)
        if shortcut is not None:
            y += shortcut.permute(0, 2, 3, 1).reshape(-1, c.out_channels)
        return y.view(n, h, w, -1).permute(0, 3, 1, 2)


def _post_op(act: nn.Module) -> str:
    if type(act) is nn.ReLU:
        return 'relu'
    return 'none' if type(act) is nn.Identity else ''


class FusableConvNormAct(ConvNormAct):
    """timm's ``ConvNormAct`` that knows its inference form (``fuse()``) and the residual tail."""

    def forward_add_relu(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """``relu(self(x) + shortcut)``, in place on the fresh output (what a residual block ends with)."""
        y = self.forward(x)
        y += shortcut
        return torch.relu_(y)

    def fuse(self) -> FusedConvAct:
        """The inference form, BatchNorm folded (``timm.utils.reparameterize_model`` swaps it in)."""
        bn = self.bn
        if is_batchnorm(bn):
            conv = fold_batchnorm(self.conv, bn)
            drop, act = getattr(bn, 'drop', None), getattr(bn, 'act', None)
        elif isinstance(bn, nn.Sequential) and not any(is_batchnorm(m) for m in bn):
            conv, drop, act = copy.deepcopy(self.conv), bn, None  # apply_norm=False: a drop layer at most
        else:
            raise ValueError(f'cannot fuse {type(self).__name__} whose norm is {type(bn).__name__}: not a BatchNorm')
        return FusedConvAct(conv, act=act, drop=drop, aa=getattr(self, 'aa', None))


def fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    """Fold every (conv, BatchNorm) pair of consecutive children of ``seq`` (timm's downsample shortcuts and
    deep stems); other children are kept. Returns a new ``nn.Sequential`` of the same length, a folded BN
    becoming ``nn.Identity`` (or its drop/act) so that indices stay valid."""
    out: List[nn.Module] = []
    for m in seq:
        if is_batchnorm(m) and out and isinstance(out[-1], nn.Conv2d):
            out[-1] = FusedConvAct(fold_batchnorm(out[-1], m))
            tail = bn_act_parts(m)
            out.append(nn.Sequential(*tail) if tail else nn.Identity())
        else:
            out.append(m)
    return nn.Sequential(*out)
