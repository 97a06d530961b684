"""The Selective Kernel unit of Li et al., "Selective Kernel Networks" (CVPR 2019, arXiv:1903.06586).

An SK unit has three steps:

* **Split** - M paths, each a conv-BN-ReLU with its own receptive field (a k x k kernel, realised by
  default as a 3x3 conv with dilation (k - 1) / 2, as in the paper's SKNet-50/101).
* **Fuse** - sum the paths, global-average-pool, then a small MLP: 1x1 conv to d channels, BN, ReLU.
* **Select** - 1x1 conv to M * C logits, softmax across the M paths per channel, weighted sum of paths.

Parameter names match timm's ``timm.layers.SelectiveKernel`` (``paths.{i}.conv``, ``paths.{i}.bn``,
``attn.fc_reduce``, ``attn.bn``, ``attn.fc_select``), so timm's SK checkpoints load without remapping.

What differs from timm is the computation, which never stacks the paths into a (B, M, C, H, W) tensor:
the pooled descriptor is the sum of per-path means, and the selection a running weighted sum. Both are exact
rewrites of the paper's equations; they save memory traffic and activation memory.
"""
from typing import Any, Dict, List, Optional, Sequence, Type, Union

import torch
from torch import nn

from .batchnorm_fold import fold_batchnorm, is_batchnorm
from .conv_norm_act import FusableConvNormAct

__all__ = ['SelectiveKernel', 'SelectiveKernelAttn', 'attn_channels_for', 'select_paths']

#: The paper's minimum width L of the fuse MLP.
DEFAULT_MIN_ATTN_CHANNELS = 32


def attn_channels_for(out_channels: int, reduction: float, min_attn_channels: int) -> int:
    """Width d of the fuse MLP: ``d = max(C / r, L)`` (paper, Eq. 4).

    For every registered model this equals timm's ``make_divisible(C / r, divisor=L)``, which is how
    timm's SK checkpoints were sized; the exactness tests load those checkpoints to prove it.
    """
    return max(int(round(out_channels / reduction)), int(min_attn_channels))


def select_paths(paths: List[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of the paths, the paper's Eq. 6: ``V = sum_m weights[:, m] * paths[m]``.

    ``weights`` has shape (B, M, C, 1, 1) and sums to 1 over M. The sum runs path by path (one multiply, then
    one ``addcmul`` per further path), so nothing of shape (B, M, C, H, W) is built, and every exporter and
    compiler sees plain multiplies and adds. Under autocast the softmax weights are float32 while the paths are
    bfloat16 / float16: they are cast to the paths' dtype.
    """
    weights = weights.to(paths[0].dtype)
    out = paths[0] * weights[:, 0]
    for i in range(1, len(paths)):
        out = torch.addcmul(out, paths[i], weights[:, i])
    return out


@torch.fx.wrap
def _check_batch_statistics(pooled: torch.Tensor, uses_batch_stats: bool) -> torch.Tensor:
    """Pass ``pooled`` through, or explain why a BatchNorm on it cannot work (batch size 1 in training).

    The fuse MLP normalises a (B, d, 1, 1) descriptor: with B = 1 BatchNorm has a single value per channel
    and torch fails with a bare "Expected more than 1 value per channel". Detection trains at batch 1, so
    the error says what to do. ``torch.fx.wrap`` keeps this a single graph node when traced (FX feature
    extraction); returning the input keeps it on the data path, so dead-code elimination cannot drop it.
    """
    if uses_batch_stats and pooled.shape[0] == 1:
        raise ValueError(
            'SelectiveKernelAttn got batch size 1 in training mode: its BatchNorm normalises one pooled value '
            'per channel and sample across the batch, which needs at least 2 samples. Use model.eval() for '
            'inference, freeze BatchNorm for small-batch training with timm.layers.freeze_batch_norm_2d(model), '
            'or train with batch size >= 2.')
    return pooled


class SelectiveKernelAttn(nn.Module):
    """Fuse and select-weight steps of the SK unit: paths -> softmax weights of shape (B, M, C, 1, 1).

    Kept as its own module so that a forward hook on it sees exactly the paper's attention vectors
    (a, b, ... in Eq. 5), which is what attention introspection records.
    """

    def __init__(
            self,
            channels: int,
            num_paths: int = 2,
            attn_channels: int = DEFAULT_MIN_ATTN_CHANNELS,
            act_layer: Type[nn.Module] = nn.ReLU,
            norm_layer: Type[nn.Module] = nn.BatchNorm2d,
            device: Optional[Union[str, torch.device]] = None,
            dtype: Optional[torch.dtype] = None,
    ):
        dd: Dict[str, Any] = {'device': device, 'dtype': dtype}
        super().__init__()
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, attn_channels, kernel_size=1, bias=False, **dd)
        self.bn = norm_layer(attn_channels, **dd)
        self.act = act_layer(inplace=True)
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, kernel_size=1, bias=False, **dd)

    def forward(self, paths: List[torch.Tensor]) -> torch.Tensor:
        # mean(sum of paths) == sum(mean of each path): the summed feature map is never written
        s = paths[0].mean((2, 3), keepdim=True)
        for i in range(1, len(paths)):
            s = s + paths[i].mean((2, 3), keepdim=True)
        if not torch.jit.is_scripting():  # a validation TorchScript cannot express (module type checks)
            s = _check_batch_statistics(s, self._uses_batch_statistics())
        z = self.act(self.bn(self.fc_reduce(s)))
        logits = self.fc_select(z)
        return logits.reshape(logits.shape[0], self.num_paths, -1, 1, 1).softmax(dim=1)

    def _uses_batch_statistics(self) -> bool:
        bn = self.bn
        return isinstance(bn, nn.modules.batchnorm._BatchNorm) and (bn.training or bn.running_mean is None)

    def reparameterize(self) -> None:
        """Fold ``bn`` into ``fc_reduce`` (``timm.utils.reparameterize_model`` calls this); the output is unchanged."""
        if is_batchnorm(self.bn):
            self.fc_reduce = fold_batchnorm(self.fc_reduce, self.bn)
            self.bn = nn.Identity()


def _as_list(value: Union[int, Sequence[int]], name: str) -> List[int]:
    if isinstance(value, int):
        return [value]
    try:
        return [int(v) for v in value]
    except TypeError:
        raise ValueError(f'{name} must be an int or a sequence of ints, got {value!r}') from None


class SelectiveKernel(nn.Module):
    """Selective Kernel convolution: split into M paths, fuse, select (drop-in for a k x k conv-BN-ReLU).

    Args:
        in_channels: input channels.
        out_channels: output channels of every path and of the unit (default: ``in_channels``).
        kernel_sizes: one odd kernel size per path, at least two paths. Default ``[3, 5]``.
        stride: stride of every path.
        padding: ``None`` keeps the spatial size (symmetric "same" padding per path, like timm);
            an int or one int per path otherwise. All paths must give the same output size.
        groups: groups of each path's convolution (32 for SKNet-50/101).
        reduction: r in ``d = max(C / r, L)``.
        min_attn_channels: L in ``d = max(C / r, L)``; 32 in the paper.
        attn_channels: set d directly, overriding ``reduction`` and ``min_attn_channels``.
        dilation: dilation of the unit as a whole (timm's output_stride 8/16 sets it); multiplies the
            per-path dilation.
        dilated_kernels: realise k > 3 as a 3x3 conv with dilation (k - 1) / 2, as the paper does
            (default). ``False`` uses true k x k kernels.
        split_input: give each path its own 1/M slice of the input channels (timm's skresnet18/34).
        act_layer: activation, as in timm's ``ConvNormAct``.
        norm_layer: normalisation, as in timm's ``ConvNormAct``.
        aa_layer: anti-aliasing for strided paths, as in timm's ``ConvNormAct``.
        drop_layer: drop layer (DropBlock), as in timm's ``ConvNormAct``.

    Raises:
        ValueError: for arguments that cannot make a valid unit; the message names the argument.
    """

    def __init__(
            self,
            in_channels: int,
            out_channels: Optional[int] = None,
            kernel_sizes: Sequence[int] = (3, 5),
            stride: int = 1,
            padding: Optional[Union[int, Sequence[int]]] = None,
            groups: int = 1,
            reduction: float = 16,
            min_attn_channels: int = DEFAULT_MIN_ATTN_CHANNELS,
            attn_channels: Optional[int] = None,
            dilation: int = 1,
            dilated_kernels: bool = True,
            split_input: bool = False,
            act_layer: Type[nn.Module] = nn.ReLU,
            norm_layer: Type[nn.Module] = nn.BatchNorm2d,
            aa_layer: Optional[Type[nn.Module]] = None,
            drop_layer: Optional[Type[nn.Module]] = None,
            device: Optional[Union[str, torch.device]] = None,
            dtype: Optional[torch.dtype] = None,
    ):
        dd: Dict[str, Any] = {'device': device, 'dtype': dtype}
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        kernel_sizes = _as_list(kernel_sizes, 'kernel_sizes')
        num_paths = len(kernel_sizes)
        _check_arguments(
            in_channels, out_channels, kernel_sizes, stride, groups, reduction, min_attn_channels,
            attn_channels, dilation, split_input)

        if dilated_kernels:
            # paper: a k x k kernel (k > 3) becomes a 3x3 kernel with dilation (k - 1) / 2
            conv_kernels = [3 if k > 3 else k for k in kernel_sizes]
            dilations = [dilation * ((k - 1) // 2 if k > 3 else 1) for k in kernel_sizes]
        else:
            conv_kernels = list(kernel_sizes)
            dilations = [dilation] * num_paths
        paddings = _resolve_padding(padding, conv_kernels, dilations, stride)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_sizes = list(kernel_sizes)
        self.num_paths = num_paths
        self.split_input = split_input
        path_in_channels = in_channels // num_paths if split_input else in_channels
        self.paths = nn.ModuleList([
            FusableConvNormAct(
                path_in_channels, out_channels, kernel_size=k, stride=stride, padding=p, dilation=d,
                groups=groups, act_layer=act_layer, norm_layer=norm_layer, aa_layer=aa_layer,
                drop_layer=drop_layer, **dd)
            for k, d, p in zip(conv_kernels, dilations, paddings)
        ])
        if attn_channels is None:
            attn_channels = attn_channels_for(out_channels, reduction, min_attn_channels)
        self.attn = SelectiveKernelAttn(
            out_channels, num_paths, attn_channels, act_layer=act_layer, norm_layer=norm_layer, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split_input:
            inputs = torch.split(x, self.in_channels // self.num_paths, dim=1)
            paths = [path(inputs[i]) for i, path in enumerate(self.paths)]
        else:
            paths = [path(x) for path in self.paths]
        return select_paths(paths, self.attn(paths))


def _check_arguments(
        in_channels: int,
        out_channels: int,
        kernel_sizes: List[int],
        stride: int,
        groups: int,
        reduction: float,
        min_attn_channels: int,
        attn_channels: Optional[int],
        dilation: int,
        split_input: bool,
) -> None:
    """Reject arguments that cannot build a valid SK unit, saying which rule was broken."""
    if len(kernel_sizes) < 2:
        raise ValueError(
            f'kernel_sizes must list at least 2 paths (an SK unit selects between paths), got {kernel_sizes}')
    for k in kernel_sizes:
        if k <= 0 or k % 2 == 0:
            raise ValueError(
                f'kernel_sizes must be positive odd ints (a centred kernel), got {k} in {kernel_sizes}')
    for name, value in (('in_channels', in_channels), ('out_channels', out_channels), ('groups', groups),
                        ('stride', stride), ('dilation', dilation), ('min_attn_channels', min_attn_channels)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f'{name} must be a positive int, got {value!r}')
    if not reduction > 0:
        raise ValueError(f'reduction must be > 0 (d = max(C / reduction, L)), got {reduction!r}')
    if attn_channels is not None and (not isinstance(attn_channels, int) or attn_channels <= 0):
        raise ValueError(f'attn_channels must be a positive int or None, got {attn_channels!r}')
    path_in = in_channels
    if split_input:
        if in_channels % len(kernel_sizes):
            raise ValueError(
                f'in_channels ({in_channels}) must be divisible by the number of paths ({len(kernel_sizes)}) '
                f'when split_input=True; use split_input=False or change kernel_sizes')
        path_in = in_channels // len(kernel_sizes)
    if path_in % groups:
        what = 'in_channels per path' if split_input else 'in_channels'
        raise ValueError(f'{what} ({path_in}) must be divisible by groups ({groups})')
    if out_channels % groups:
        raise ValueError(f'out_channels ({out_channels}) must be divisible by groups ({groups})')


def _resolve_padding(
        padding: Optional[Union[int, Sequence[int]]],
        kernels: List[int],
        dilations: List[int],
        stride: int,
) -> List[int]:
    """Padding per path. ``None`` is timm's symmetric padding, which keeps H x W at stride 1."""
    if padding is None:
        return [((stride - 1) + d * (k - 1)) // 2 for k, d in zip(kernels, dilations)]
    paddings = _as_list(padding, 'padding')
    if len(paddings) == 1:
        paddings = paddings * len(kernels)
    if len(paddings) != len(kernels):
        raise ValueError(f'padding must be one int or one per path ({len(kernels)}), got {padding!r}')
    if any(p < 0 for p in paddings):
        raise ValueError(f'padding must be >= 0, got {padding!r}')
    # out = floor((H + 2p - extent) / stride) + 1 is the same for every H only if 2p - extent is
    extents = [d * (k - 1) + 1 for k, d in zip(kernels, dilations)]
    if len({2 * p - e for p, e in zip(paddings, extents)}) != 1:
        raise ValueError(
            f'padding {padding!r} gives paths of different output sizes (path kernel extents {extents}); '
            f'use padding=None, or per-path paddings p_i with 2 * p_i - extent_i equal for all paths')
    return paddings
