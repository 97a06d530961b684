"""Look inside the SK units: record the selection weights every SK unit computes during a forward pass.

The selection weights (the paper's a, b, ... of Eq. 5) decide, per channel and per image, how much each
kernel size contributes; they are the whole point of an SKNet. ``record_sk_attention`` hooks every SK
attention module for the duration of a ``with`` block only, so a model outside the block runs without any
hook (no cost when not in use)::

    with record_sk_attention(model) as rec:
        model(x)
    rec['SK_2_3']          # (B, M, C) softmax weights of stage 2, block 3 (paper naming)
    rec.units['SK_2_3']    # where it lives, how many paths, which path has the larger receptive field

Units are named as in the paper's Fig. 3: ``SK_{stage}_{block}`` with the stem counted as stage 1 (so
timm's ``layer1`` is stage 2) and blocks counted from 1. A unit outside a ``layer{i}.{j}`` block is named
by its module path. Both this package's ``SelectiveKernelAttn`` (and subclasses, e.g. in fused models) and
timm's ``timm.layers.SelectiveKernelAttn`` (timm's skresnet/skresnext) are recognised.
"""
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from timm.layers.selective_kernel import SelectiveKernelAttn as _TimmSelectiveKernelAttn

from ..layers import SelectiveKernelAttn

__all__ = ['SKUnitInfo', 'SKAttentionRecord', 'find_sk_units', 'record_sk_attention', 'is_sk_attention']

_BLOCK_PATH = re.compile(r'(?:^|\.)layer(\d+)\.(\d+)\.')


def is_sk_attention(module: nn.Module) -> bool:
    """True for a module whose forward returns SK selection weights of shape (B, M, C, 1, 1).

    By convention that is any instance of this package's or timm's ``SelectiveKernelAttn`` (fused
    variants subclass it) carrying a ``num_paths`` attribute.
    """
    return isinstance(module, (SelectiveKernelAttn, _TimmSelectiveKernelAttn)) and hasattr(module, 'num_paths')


@dataclass(frozen=True)
class SKUnitInfo:
    """Where an SK unit sits and how its paths differ.

    Attributes:
        name: ``SK_{stage}_{block}`` (paper naming) or the module path when the unit is not in a block.
        module_path: dotted path of the attention module inside the model (``layer1.2.conv2.attn``).
        stage: paper stage number (timm ``layer{i}`` is stage ``i + 1``), or None.
        block: 1-based block index within the stage, or None.
        num_paths: M, the number of kernels the unit selects between.
        path_extents: receptive field extent of each path's convolution (``dilation * (k - 1) + 1``:
            3 for 3x3, 5 for the paper's dilated "5x5"), or None when the paths cannot be inspected.
    """
    name: str
    module_path: str
    stage: Optional[int]
    block: Optional[int]
    num_paths: int
    path_extents: Optional[Tuple[int, ...]]

    @property
    def largest_path(self) -> int:
        """Index of the path with the largest receptive field (the last path if unknown)."""
        extents = self.path_extents
        if extents is None:
            return self.num_paths - 1
        return max(range(self.num_paths), key=lambda i: (extents[i], i))

    @property
    def smallest_path(self) -> int:
        """Index of the path with the smallest receptive field (the first path if unknown)."""
        extents = self.path_extents
        if extents is None:
            return 0
        return min(range(self.num_paths), key=lambda i: (extents[i], i))


def _path_extents(model: nn.Module, attn_path: str, num_paths: int) -> Optional[Tuple[int, ...]]:
    """Receptive field extent of each path of the unit that owns ``attn_path``, from its first conv."""
    parent_path = attn_path.rpartition('.')[0]
    try:
        parent = model.get_submodule(parent_path) if parent_path else model
    except AttributeError:
        return None
    paths = getattr(parent, 'paths', None)
    if not isinstance(paths, nn.ModuleList) or len(paths) != num_paths:
        return None
    extents = []
    for path in paths:
        conv = next((m for m in path.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            return None
        extents.append(conv.dilation[0] * (conv.kernel_size[0] - 1) + 1)
    return tuple(extents)


def find_sk_units(model: nn.Module) -> Dict[str, Tuple[SKUnitInfo, nn.Module]]:
    """Every SK attention module of ``model`` in definition order, keyed by unit name."""
    found: List[Tuple[str, nn.Module, Optional[int], Optional[int]]] = []
    for path, module in model.named_modules():
        if not is_sk_attention(module):
            continue
        match = _BLOCK_PATH.search(path)
        stage, block = (int(match.group(1)) + 1, int(match.group(2)) + 1) if match else (None, None)
        found.append((path, module, stage, block))
    short_names = [f'SK_{s}_{b}' if s is not None else p for p, _, s, b in found]
    units: Dict[str, Tuple[SKUnitInfo, nn.Module]] = {}
    for (path, module, stage, block), short in zip(found, short_names):
        # two units in one block would share a paper name: fall back to module paths for those
        name = short if short_names.count(short) == 1 else path
        num_paths = int(getattr(module, 'num_paths'))
        info = SKUnitInfo(name, path, stage, block, num_paths, _path_extents(model, path, num_paths))
        units[name] = (info, module)
    return units


class SKAttentionRecord:
    """Selection weights captured by :func:`record_sk_attention`, keyed by unit name.

    Each forward pass inside the context appends one (B, M, C) tensor per unit; ``rec[name]`` returns
    them concatenated along the batch dimension, so several batches can be recorded in one context.
    """

    def __init__(self, units: Dict[str, SKUnitInfo], detach: bool, device: Optional[torch.device]):
        self.units = units
        self._detach = detach
        self._device = device
        self._weights: Dict[str, List[torch.Tensor]] = {name: [] for name in units}

    def _append(self, name: str, weights: torch.Tensor) -> None:
        w = weights.reshape(weights.shape[0], weights.shape[1], -1)
        if self._detach:
            w = w.detach()
        if self._device is not None:
            w = w.to(self._device)
        self._weights[name].append(w)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._weights:
            raise KeyError(f'no SK unit named {name!r}; units: {", ".join(self._weights)}')
        chunks = self._weights[name]
        if not chunks:
            raise KeyError(f'SK unit {name!r} has not run inside the recording context yet')
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=0)

    def __contains__(self, name: object) -> bool:
        return name in self._weights

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def keys(self) -> List[str]:
        return list(self._weights)

    def items(self) -> Iterator[Tuple[str, torch.Tensor]]:
        """(name, weights) of the units that ran, in model order."""
        return ((name, self[name]) for name, chunks in self._weights.items() if chunks)

    def num_calls(self, name: str) -> int:
        """How many forward passes of the unit were recorded."""
        return len(self._weights[name])

    def clear(self) -> None:
        """Drop what was recorded (the hooks stay while the context is open)."""
        for chunks in self._weights.values():
            chunks.clear()


class record_sk_attention:  # noqa: N801  (used as a context manager, like torch.no_grad)
    """Context manager recording the SK selection weights of every SK unit of ``model``.

    Args:
        model: any module containing SK attention modules (this package's SKNets, fused or not, or
            timm's skresnet/skresnext models).
        detach: store detached weights (default). ``False`` keeps the autograd graph, e.g. to
            back-propagate from the attention.
        device: move recorded weights there (e.g. ``'cpu'``); default keeps them where they were.

    Raises:
        ValueError: the model has no SK unit.

    Hooks are registered on ``__enter__`` and removed on ``__exit__``, also when the block raises.
    Eager modules only: a TorchScript-scripted or exported model has no hooks to attach.
    """

    def __init__(self, model: nn.Module, detach: bool = True, device: Optional[torch.device] = None):
        units = find_sk_units(model)
        if not units:
            raise ValueError(
                f'{type(model).__name__} has no SK unit (no SelectiveKernelAttn module): '
                f'record_sk_attention works on timm_sknet models (timm.create_model("sknet50")) '
                f"and on timm's skresnet/skresnext models")
        self._modules = {name: module for name, (_, module) in units.items()}
        self.record = SKAttentionRecord(
            {name: info for name, (info, _) in units.items()}, detach,
            torch.device(device) if device is not None else None)
        self._handles: List[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> SKAttentionRecord:
        if self._handles:
            raise RuntimeError('record_sk_attention is already active; it cannot be entered twice')
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self._remove()
            raise
        return self.record

    def __exit__(self, *exc_info: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        record = self.record

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            record._append(name, output)
        return hook
