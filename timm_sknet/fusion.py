"""Inference fusion: fold every BatchNorm of an SKNet into the convolution before it.

The entry point is timm's own ``timm.utils.reparameterize_model(model)`` (what timm's ``validate.py``
and ``benchmark.py`` call with ``--reparam``). It walks the module tree and calls ``reparameterize()``
on each child that has one; the SK modules implement it by swapping their conv-BN(-act) children for
the small fused modules below, in place, so that timm's walk then visits the fused children too:

* ``SKBlock`` / ``SKBasicBlock``: the 1x1 / 3x3 ``ConvNormAct`` convs and the downsample shortcut;
* ``SelectiveKernel``: every path (``ConvNormAct`` with a ``BatchNormAct2d``) and its attention;
* ``SelectiveKernelAttn``: becomes a :class:`FusedSelectiveKernelAttn` (still a ``SelectiveKernelAttn``
  whose output is the (B, M, C, 1, 1) softmax weights, so forward hooks keep working);
* the stem: ``conv1`` and ``bn1`` are direct children of the root ``SKNet`` and timm's walk never
  looks at the root, so ``SKNet`` carries a parameter-free :class:`StemReparam` child that folds them.

Folding is exact algebra (``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``),
computed in float64 and rounded once. Fused modules are for inference: there is no BatchNorm left
to train.
"""
import copy
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import ConvNormAct

from .sk_unit import SelectiveKernelAttn

__all__ = [
    'FusedConvAct', 'FusedSelectiveKernelAttn', 'StemReparam', 'fold_batchnorm', 'fuse_conv_norm_act',
    'fuse_sequential', 'is_batchnorm', 'unfused_batchnorms',
]


def is_batchnorm(module: nn.Module) -> bool:
    """True for modules that apply per-channel running statistics: torch/timm BN and frozen BN."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return True
    return all(hasattr(module, a) for a in ('running_mean', 'running_var', 'eps')) and 'BatchNorm' in \
        type(module).__name__


def unfused_batchnorms(model: nn.Module) -> List[str]:
    """Names of the BatchNorm modules still present in ``model`` (empty once it is fully fused)."""
    return [name for name, m in model.named_modules() if is_batchnorm(m)]


def fold_batchnorm(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """A copy of ``conv`` (same class and settings) with ``bn``'s inference affine folded into it.

    Works for ``nn.BatchNorm2d`` and subclasses (timm's ``BatchNormAct2d``: only the normalisation is
    folded, its drop/act are not) and for frozen BN (torchvision/timm ``FrozenBatchNorm2d``).

    Raises:
        ValueError: ``bn`` keeps no running statistics (it normalises with batch statistics at inference
            too, which no convolution can reproduce), or the channel counts disagree.
    """
    mean, var = getattr(bn, 'running_mean', None), getattr(bn, 'running_var', None)
    if mean is None or var is None:
        raise ValueError(
            f'cannot fold {type(bn).__name__} into a convolution: it has no running statistics '
            f'(track_running_stats=False normalises with batch statistics even in eval mode)')
    if mean.numel() != conv.out_channels:
        raise ValueError(
            f'cannot fold {type(bn).__name__}({mean.numel()}) into a conv with {conv.out_channels} outputs')
    fused = copy.deepcopy(conv)
    dd = dict(device=conv.weight.device, dtype=torch.float64)
    w = conv.weight.detach().to(**dd)
    b = conv.bias.detach().to(**dd) if conv.bias is not None else torch.zeros(conv.out_channels, **dd)
    gamma = bn.weight.detach().to(**dd) if getattr(bn, 'weight', None) is not None else torch.ones_like(b)
    beta = bn.bias.detach().to(**dd) if getattr(bn, 'bias', None) is not None else torch.zeros_like(b)
    scale = gamma / torch.sqrt(var.detach().to(**dd) + bn.eps)
    dtype = conv.weight.dtype
    fused.weight = nn.Parameter(
        (w * scale.reshape(-1, *([1] * (w.ndim - 1)))).to(dtype).contiguous(),
        requires_grad=conv.weight.requires_grad)
    fused.bias = nn.Parameter(
        ((b - mean.detach().to(**dd)) * scale + beta).to(dtype), requires_grad=conv.weight.requires_grad)
    return fused


def _bn_act_parts(bn: nn.Module) -> List[nn.Module]:
    """The modules a (frozen) BatchNormAct applies after normalising: its drop then its act."""
    return [m for m in (getattr(bn, 'drop', None), getattr(bn, 'act', None))
            if m is not None and not isinstance(m, nn.Identity)]


def _mkldnn_pointwise_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_convolution_pointwise')
    except (AttributeError, RuntimeError):
        return False


_HAS_MKLDNN_POINTWISE = _mkldnn_pointwise_available()

#: 1x1 convs over at most this many pixels (batch x H x W) run as a BLAS matrix product instead.
MATMUL_MAX_PIXELS = 1024


@torch.jit.unused
def _eager_inference(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where oneDNN's fused conv + post-op kernels pay off: eager CPU fp32 inference on a
    channels_last input (on NCHW they reorder every call and lose), nothing recording a graph
    (TorchScript, tracing/ONNX export, torch.compile) and no gradient needed."""
    return (_HAS_MKLDNN_POINTWISE and x.device.type == 'cpu' and x.dtype == torch.float32
            and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            and torch.backends.mkldnn.enabled
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


class FusedConvAct(nn.Module):
    """``conv`` (BN folded in, with bias), then optional drop, activation and anti-aliasing.

    The inference form of timm's ``ConvNormAct``; the same output for the same input. In eager CPU
    inference a ReLU (or no activation) runs inside oneDNN's convolution as a post-op, and
    :meth:`forward_add_act` adds a residual and applies ReLU there too, saving full passes over the
    output. Anywhere else (autograd, TorchScript, ONNX export, ``torch.compile``, GPU) it runs the
    plain modules, which compilers fuse their own way.
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
        # oneDNN post-op for the activation: 'relu', 'none', or '' when it cannot run fused
        self.post_op = ('relu' if type(self.act) is nn.ReLU else 'none' if type(self.act) is nn.Identity
                        else '') if plain else ''
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
        if self.post_op != '' and _eager_inference(x, self.conv.weight):
            if self._small_pointwise(x):
                y = self._matmul(x)
                return self.aa(y.relu_() if self.post_op == 'relu' else y)
            return self.aa(self._onednn(x))
        return self.aa(self.act(self.drop(self.conv(x))))

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

    @torch.jit.unused
    def _onednn(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x, c.weight, c.bias, list(c.padding), list(c.stride), list(c.dilation), c.groups, self.post_op,
            [], '')

    @torch.jit.unused
    def can_add_act(self, x: torch.Tensor, shortcut: torch.Tensor, act: nn.Module) -> bool:
        """Whether :meth:`forward_add_act` may run ``act(conv(x) + shortcut)`` as one oneDNN kernel."""
        return (self.post_op == 'none' and type(self.aa) is nn.Identity and type(act) is nn.ReLU
                and _eager_inference(x, self.conv.weight) and shortcut.dtype == x.dtype
                and shortcut.is_contiguous(memory_format=torch.channels_last))

    @torch.jit.unused
    def forward_add_act(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """``relu(conv(x) + shortcut)`` in one kernel (check :meth:`can_add_act` first)."""
        if self._small_pointwise(x):
            return self._matmul(x, shortcut).relu_()
        c = self.conv
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, shortcut, c.weight, c.bias, list(c.padding), list(c.stride), list(c.dilation), c.groups,
            'add', None, 'relu', [], '')


def fuse_conv_norm_act(module: ConvNormAct) -> FusedConvAct:
    """Fold a timm ``ConvNormAct`` (conv, ``bn`` = BatchNormAct2d or empty, optional ``aa``)."""
    bn = module.bn
    if is_batchnorm(bn):
        conv = fold_batchnorm(module.conv, bn)
        drop, act = getattr(bn, 'drop', None), getattr(bn, 'act', None)
    elif isinstance(bn, nn.Sequential) and not any(is_batchnorm(m) for m in bn):
        conv = copy.deepcopy(module.conv)  # apply_norm=False: only a drop layer (or nothing) follows
        drop, act = bn, None
    else:
        raise ValueError(f'cannot fuse ConvNormAct whose norm is {type(bn).__name__}: not a BatchNorm')
    aa = getattr(module, 'aa', None)
    return FusedConvAct(conv, act=act, drop=drop, aa=aa)


def fuse_sequential(seq: nn.Sequential) -> nn.Sequential:
    """Fold every (conv, BatchNorm) pair of consecutive children of ``seq`` (timm's downsample and deep
    stems); other children are kept. Returns a new ``nn.Sequential`` of the same length, a folded BN
    becoming ``nn.Identity`` so indices stay valid."""
    out: List[nn.Module] = []
    for m in seq:
        if is_batchnorm(m) and out and isinstance(out[-1], nn.Conv2d):
            out[-1] = FusedConvAct(fold_batchnorm(out[-1], m))
            tail = _bn_act_parts(m)
            out.append(nn.Sequential(*tail) if tail else nn.Identity())
        else:
            out.append(m)
    return nn.Sequential(*out)


def fuse_child(parent: nn.Module, name: str) -> None:
    """Replace ``parent.<name>`` by its fused form when it is a conv-BN container of a known kind."""
    child = getattr(parent, name, None)
    if isinstance(child, ConvNormAct):
        setattr(parent, name, fuse_conv_norm_act(child))
    elif isinstance(child, nn.Sequential):
        setattr(parent, name, fuse_sequential(child))


class FusedSelectiveKernelAttn(SelectiveKernelAttn):
    """``SelectiveKernelAttn`` with its BN folded into ``fc_reduce``; output: the same softmax weights.

    The two 1x1 convolutions act on a 1x1 map, so they run as matrix products on (B, C) rows, which
    avoids convolution overhead for tiny inputs.
    """

    def __init__(self, attn: SelectiveKernelAttn):
        nn.Module.__init__(self)
        self.num_paths = attn.num_paths
        self.fc_reduce = fold_batchnorm(attn.fc_reduce, attn.bn)
        self.bn = nn.Identity()
        self.act = attn.act
        self.fc_select = attn.fc_select

    def forward(self, paths: List[torch.Tensor]) -> torch.Tensor:
        s = paths[0].mean((2, 3))
        for i in range(1, len(paths)):
            s = s + paths[i].mean((2, 3))
        z = self.act(F.linear(s, self.fc_reduce.weight.flatten(1), self.fc_reduce.bias))
        logits = F.linear(z, self.fc_select.weight.flatten(1), self.fc_select.bias)
        return logits.reshape(logits.shape[0], self.num_paths, -1, 1, 1).softmax(dim=1)

    def fuse(self) -> nn.Module:
        """Already fused: a second ``reparameterize_model`` leaves it as it is."""
        return self


class StemReparam(nn.Module):
    """Folds the stem of a timm ResNet (``conv1``, ``bn1``, ``act1`` of the root) when timm's
    ``reparameterize_model`` calls ``reparameterize()``; does nothing in ``forward``.

    ``reparameterize_model`` only visits children, and the stem modules are children of the root
    itself, so the root registers this helper as a child that knows its owner. The owner is held
    outside ``_modules`` (no cycle in the module tree, no state-dict keys), so checkpoints keep
    timm's keys and ``copy.deepcopy`` of the root re-points the copy to the copied root.
    """

    def __init__(self, owner: nn.Module):
        super().__init__()
        object.__setattr__(self, '_owner', owner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def reparameterize(self) -> None:
        owner = self.__dict__['_owner']
        conv, bn = owner.conv1, owner.bn1
        if not is_batchnorm(bn):
            return  # already fused
        if isinstance(conv, nn.Sequential):  # deep stems: conv-bn-act-conv-bn-act-conv, then bn1
            conv = fuse_sequential(conv)
            conv[-1] = FusedConvAct(fold_batchnorm(conv[-1], bn))
            owner.conv1 = conv
        elif isinstance(conv, nn.Conv2d):
            owner.conv1 = FusedConvAct(fold_batchnorm(conv, bn), act=owner.act1)
            owner.act1 = nn.Identity()
        else:
            raise ValueError(f'cannot fold stem: conv1 is a {type(conv).__name__}, not a Conv2d or Sequential')
        tail = _bn_act_parts(bn)
        owner.bn1 = nn.Sequential(*tail) if tail else nn.Identity()

    def extra_repr(self) -> str:
        return 'folds conv1 + bn1 on reparameterize()'


def reparameterize_sk_unit(unit: nn.Module) -> None:
    """In-place fusion of a ``SelectiveKernel``: its paths and its attention."""
    for i in range(len(unit.paths)):
        if isinstance(unit.paths[i], ConvNormAct):
            unit.paths[i] = fuse_conv_norm_act(unit.paths[i])
    if type(unit.attn) is SelectiveKernelAttn:
        unit.attn = FusedSelectiveKernelAttn(unit.attn)
    unit.inplace_select = True  # the fused paths' outputs are fresh tensors nobody else keeps


def reparameterize_block(block: nn.Module) -> None:
    """In-place fusion of an SK residual block: its convs, its SK unit and its downsample shortcut."""
    for name in ('conv1', 'conv2', 'conv3', 'downsample'):
        child = getattr(block, name, None)
        if isinstance(child, (ConvNormAct, nn.Sequential)):
            fuse_child(block, name)
        elif child is not None and hasattr(child, 'reparameterize'):
            child.reparameterize()  # the SK unit
