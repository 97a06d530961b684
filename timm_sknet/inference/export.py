"""Export an SKNet (plain or fused) to ONNX or TorchScript, checked against the model.

Every writer exports to a temporary file next to the destination, checks it, and renames it into place,
so a file at ``path`` is always complete. Exports run on an eval-mode copy of the model: the caller's
model (and its train/eval mode) is left as it was.

ONNX uses PyTorch's TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs the
optional ``onnxscript`` package, and the TorchScript-based one exports these models exactly.
"""
import copy
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..file_io import atomic_file
from .outputs import as_list, output_names, relative_error, restore

__all__ = [
    'MIN_ONNX_OPSET', 'export_onnx', 'export_torchscript', 'onnx_relative_error',
    'resolve_input_size',
]

PathLike = Union[str, os.PathLike]

#: Lowest ONNX opset accepted; every current runtime (onnxruntime, TensorRT, OpenVINO) reads opset 17.
MIN_ONNX_OPSET = 17


def resolve_input_size(model: nn.Module, input_size: Optional[Sequence[int]] = None) -> Tuple[int, int, int]:
    """(C, H, W) to export with: ``input_size`` if given, else the model's ``pretrained_cfg``, else 3x224x224."""
    if input_size is None:
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        input_size = cfg.get('input_size', (3, 224, 224))
    size = tuple(int(s) for s in input_size)
    if len(size) != 3 or min(size) <= 0:
        raise ValueError(f'input_size must be (channels, height, width) of positive ints, got {input_size!r}')
    return size


@contextmanager
def atomic_export_path(path: PathLike, suffix: str) -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; rename it to ``path`` only on success."""
    dest = Path(path)
    if dest.is_dir():
        raise IsADirectoryError(f'{dest} is a folder; give a file path such as {dest / ("model" + suffix)}')
    if not dest.parent.is_dir():
        raise FileNotFoundError(f'folder {dest.parent} does not exist; create it first')
    with atomic_file(dest) as tmp:
        yield tmp


def eval_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode without gradients, so an export leaves the caller's model as it was."""
    if not isinstance(model, nn.Module):
        raise TypeError(f'expected a torch.nn.Module, got {type(model).__name__}')
    return copy.deepcopy(model).eval().requires_grad_(False)


def _example_input(model: nn.Module, input_size: Sequence[int], batch_size: int, seed: int = 0) -> torch.Tensor:
    p = next(model.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device('cpu'), torch.float32)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, *input_size, generator=g).to(device=device, dtype=dtype)


def onnx_relative_error(path: PathLike, model: nn.Module, x: torch.Tensor) -> float:
    """max |onnxruntime(path)(x) - model(x)| / max |model(x)| over every output (model run in eval mode)."""
    import onnxruntime as ort
    ref_model = eval_copy(model)
    with torch.inference_mode():
        ref = ref_model(x)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    outs = [torch.from_numpy(o) for o in session.run(None, {name: x.detach().float().cpu().numpy()})]
    return relative_error(restore(outs, ref), ref)


def export_onnx(
        model: nn.Module,
        path: PathLike,
        *,
        input_size: Optional[Sequence[int]] = None,
        batch_size: int = 1,
        opset: int = MIN_ONNX_OPSET,
        dynamic_batch: bool = True,
        dynamic_size: bool = False,
        verify: bool = True,
        rtol: float = 1e-4,
) -> Path:
    """Export ``model`` (plain, or fused by ``timm_sknet.inference.fuse_model``) to an ONNX file.

    A classifier has one output, ``output``; a ``features_only`` model one per feature map, ``feature_0``
    to ``feature_{n-1}``; a feature pyramid (:func:`timm_sknet.detection.sknet_fpn_backbone`) one per level,
    ``feature_0`` ... ``feature_pool``. The input is ``input``.

    Args:
        model: the model; exported from an eval-mode copy.
        path: destination ``.onnx`` file, written atomically.
        input_size: (C, H, W); default from ``model.pretrained_cfg``.
        batch_size: batch of the example input used for tracing.
        opset: ONNX opset, at least :data:`MIN_ONNX_OPSET`.
        dynamic_batch: make the batch dimension symbolic.
        dynamic_size: make height and width symbolic too (input and feature maps), for detectors and any
            input size; the model must accept any size (timm's convnets do).
        verify: run the file with onnxruntime (CPU) on a different batch size (and, with ``dynamic_size``, an
            odd size as well) and compare with PyTorch; raises ``RuntimeError`` if the largest difference
            exceeds ``rtol`` times the largest output.
        rtol: tolerance of the check, relative to the largest |output|.

    Returns:
        The path written.
    """
    if opset < MIN_ONNX_OPSET:
        raise ValueError(f'opset must be >= {MIN_ONNX_OPSET}, got {opset}')
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    import onnx  # (fail early, with the package name, if the extra is missing)

    size = resolve_input_size(model, input_size)
    export_model = eval_copy(model)
    x = _example_input(export_model, size, batch_size)
    with torch.inference_mode():
        example = export_model(x)
    names = output_names(example)
    axes = _dynamic_axes(names, as_list(example), dynamic_batch, dynamic_size)
    with atomic_export_path(path, '.onnx') as tmp:
        with warnings.catch_warnings():
            # the dynamo exporter would need onnxscript; the TorchScript-based one is exact here
            warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX export.*')
            warnings.filterwarnings('ignore', message='.*feature will be removed.*')
            warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
            torch.onnx.export(
                export_model, (x,), str(tmp), dynamo=False, opset_version=opset, input_names=['input'],
                output_names=names, dynamic_axes=axes, do_constant_folding=True)
        onnx.checker.check_model(str(tmp))
        if verify:
            checked = [size, (size[0], size[1] + 33, size[2] + 17)] if dynamic_size else [size]
            for n, (c, h, w) in enumerate(checked):
                xv = _example_input(export_model, (c, h, w), batch_size + 1 if dynamic_batch else batch_size, n + 1)
                error = onnx_relative_error(tmp, export_model, xv)
                if error > rtol:
                    raise RuntimeError(
                        f'ONNX export differs from PyTorch at {h}x{w} by {error:.3g} of the largest output '
                        f'(> rtol {rtol:g}); nothing was written to {path}')
    return Path(path)


def _dynamic_axes(names: Sequence[str], outputs: Sequence[torch.Tensor], batch: bool,
                  size: bool) -> Optional[Dict[str, Dict[int, str]]]:
    """torch.onnx's ``dynamic_axes``: the batch, and with ``size`` the height and width of the input and of every
    feature map (each output its own names: a map's size follows the input's through strided convs and pools)."""
    if not (batch or size):
        return None
    axes: Dict[str, Dict[int, str]] = {}
    for name, ndim in (('input', 4), *((n, o.dim()) for n, o in zip(names, outputs))):
        axes[name] = {0: 'batch'} if batch else {}
        if size and ndim == 4:
            axes[name].update({2: f'{name}_height', 3: f'{name}_width'})
    return axes


def export_torchscript(
        model: nn.Module,
        path: PathLike,
        *,
        method: str = 'script',
        input_size: Optional[Sequence[int]] = None,
        verify: bool = True,
        rtol: float = 1e-5,
) -> Path:
    """Save ``model`` as TorchScript (``torch.jit.script`` by default, or ``method='trace'``), atomically.

    With ``verify`` the saved file is loaded back and compared with the eager model on a batch of 2.
    """
    if method not in ('script', 'trace'):
        raise ValueError(f"method must be 'script' or 'trace', got {method!r}")
    size = resolve_input_size(model, input_size)
    export_model = eval_copy(model)
    x = _example_input(export_model, size, 2)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=FutureWarning, message='.*torch.jit.*deprecated.*')
        scripted = torch.jit.script(export_model) if method == 'script' else torch.jit.trace(export_model, x)
        with atomic_export_path(path, '.pt') as tmp:
            scripted.save(str(tmp))
            if verify:
                loaded = torch.jit.load(str(tmp), map_location=x.device)
                with torch.inference_mode():
                    error = relative_error(loaded(x), export_model(x))
                if error > rtol:
                    raise RuntimeError(f'TorchScript differs from eager by {error:.3g} of the largest output '
                                       f'(> rtol {rtol:g}); nothing was written to {path}')
    return Path(path)
