"""The runtimes an SKNet can run in, each built from a model for one precision.

Every builder returns a :class:`Runner`: a function from an input batch (torch tensor) to the model's
outputs (torch tensors), plus a one-line description of what it runs. The model handed in is the plain
one; each backend prepares what suits it:

* ``eager``: the model with every BatchNorm folded (``fuse_model``), channels_last.
* ``inductor``: the same model exported (``torch.export``), then compiled by inductor with weight freezing.

Each is built for one input size, or with ``dynamic_size`` for any height and width (ONNX with symbolic height
and width, ``torch.export`` with them marked dynamic and inductor compiling for symbolic shapes).
* ``onnxruntime``: the folded model exported to ONNX (``export_onnx``, checked), run by onnxruntime.
* ``openvino``: the same ONNX file compiled by OpenVINO, with ``INFERENCE_PRECISION_HINT`` f32 or bf16;
  int8 after post-training quantization by NNCF on calibration batches.

For the torch backends, bf16 means the folded model's weights and activations in bfloat16 (measured faster than
autocast, eager and compiled, with the same error: benchmarks/results). A runtime that is not installed, or a
precision a backend cannot run, raises :class:`BackendUnavailable` with the one command or option that fixes it.

Every runner may be called from many threads at once (each call gets its own runtime state: torch modules and
onnxruntime sessions are reentrant, OpenVINO calls take infer requests from a pool), and carries a ``recipe``:
a picklable ``(function, args)`` that builds the same runner in another process (weights, ONNX bytes or the
OpenVINO IR; no runtime object crosses a process boundary).
"""
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..layers import unfused_batchnorms
from .export import export_onnx
from .fuse import fuse_model
from .openvino_runtime import OpenVINOInfer, PortableOVModel, core
from .outputs import Outputs, as_list, restore

__all__ = ['BACKENDS', 'PRECISIONS', 'BackendUnavailable', 'Runner', 'build_runner', 'check_backend_precision']

BACKENDS = ('eager', 'inductor', 'onnxruntime', 'openvino')
PRECISIONS = ('fp32', 'bf16', 'int8')


class BackendUnavailable(RuntimeError):
    """The backend cannot run here, or not at this precision; the message says what to install or choose."""


#: ``(function, args)``: ``function(*args)`` builds a :class:`Runner` (picklable where the args are)
Recipe = Tuple[Callable[..., 'Runner'], Tuple[Any, ...]]


@dataclass
class Runner:
    """``run(x)`` gives the model's outputs for ``x``; ``description`` says what runs them."""
    run: Callable[[torch.Tensor], Outputs]
    description: str
    module: Optional[nn.Module] = None  # the torch module that runs, for torch backends
    recipe: Optional[Recipe] = None  # how to build this runner again, in another process


_DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}


def _torch_runner(module: nn.Module, device: torch.device, dtype: torch.dtype, description: str,
                  recipe: Recipe) -> Runner:
    """Inputs to ``device`` / ``dtype`` / channels_last, outputs back to float32."""
    def run(x: torch.Tensor) -> Outputs:
        x = x.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = module(x)
        return restore([t.float() for t in as_list(out)], out)
    return Runner(run, f'{description}, {dtype}'.replace('torch.', ''), module, recipe)


def check_backend_precision(backend: str, precision: str) -> None:
    """Refuse, with the remedy, a backend / precision pair that has no path (before any work is done)."""
    if backend not in ('auto', *BACKENDS):
        raise ValueError(f'backend must be auto or one of {", ".join(BACKENDS)}, got {backend!r}')
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    if precision == 'int8' and backend not in ('auto', 'openvino'):
        raise BackendUnavailable(f"backend={backend!r} has no int8 path; use backend='openvino' for int8 "
                                 "(post-training quantization with NNCF)")
    if precision == 'bf16' and backend == 'onnxruntime':
        raise BackendUnavailable("backend='onnxruntime' runs fp32 only here (its CPU kernels have no bf16 "
                                 "convolutions); use backend='openvino' for bf16")


def _prepared(model: nn.Module, device: torch.device, precision: str) -> Tuple[nn.Module, str]:
    """The folded model on ``device``, channels_last, its weights in the precision's dtype; and that in words."""
    prepared = fuse_model(model).eval().to(  # type: ignore[call-overload]  # torch's stub omits memory_format
        device=device, dtype=_DTYPES[precision], memory_format=torch.channels_last)
    left = len(unfused_batchnorms(prepared))
    return prepared, f'BatchNorm {"folded" if not left else f"not folded ({left} left)"}, channels_last'


def eager_runner(prepared: nn.Module, device: torch.device, dtype: torch.dtype, how: str) -> Runner:
    """The prepared (folded) module run as it is."""
    return _torch_runner(prepared, device, dtype, f'PyTorch eager, {how}',
                         recipe=(eager_runner, (prepared, device, dtype, how)))


def build_eager(model: nn.Module, precision: str, device: torch.device) -> Runner:
    prepared, how = _prepared(model, device, precision)
    return eager_runner(prepared, device, _DTYPES[precision], how)


def inductor_runner(prepared: nn.Module, device: torch.device, dtype: torch.dtype, how: str,
                    input_size: Tuple[int, ...], dynamic_size: bool = False) -> Runner:
    """``torch.export`` of the prepared model (batch size dynamic, and height and width with ``dynamic_size``),
    compiled by inductor with weight freezing (with ``dynamic_size`` for symbolic shapes from the first call).

    Exported, every optimized model runs a graph module of its own, so dynamo's cache, which is kept per code
    object, holds this model's entries only (one per batch-size specialisation), however many models a process
    optimizes. Compiled directly, every timm ResNet shares ``ResNet.forward``; with freezing, dynamo guards each
    model's weights by identity there, and past its recompile limit ``fullgraph=True`` turns that into a crash.
    Freezing (PyTorch's advice for CPU inference: constant weights, prepacked for the CPU's kernels) is an option
    of this compiled module, so the compilations that new batch sizes trigger later freeze too, and no global
    inductor setting changes under other threads.
    """
    example = torch.randn(2, *input_size, device=device, dtype=dtype)
    dims = (0, 2, 3) if dynamic_size else (0,)
    with torch.no_grad():
        program = torch.export.export(prepared, (example.contiguous(memory_format=torch.channels_last),),
                                      dynamic_shapes=({d: torch.export.Dim.AUTO for d in dims},))
    compiled = torch.compile(program.module(), fullgraph=True, options={'freezing': True},
                             dynamic=True if dynamic_size else None)
    if dynamic_size:
        # compiled now, at a height other than the width: dynamo's duck sizing ties two dims equal at the first
        # call into one symbol, so a square first call would compile again at the first non-square size
        with torch.inference_mode():
            compiled(torch.randn(2, input_size[0], input_size[1], input_size[2] + 1, device=device, dtype=dtype)
                     .contiguous(memory_format=torch.channels_last))
    return _torch_runner(compiled, device, dtype,  # type: ignore[arg-type]  # compiling a Module gives a Module
                         f'torch.export + inductor (freezing{", dynamic height and width" if dynamic_size else ""}), '
                         f'{how}', recipe=(inductor_runner, (prepared, device, dtype, how, tuple(input_size),
                                                            dynamic_size)))


def build_inductor(model: nn.Module, precision: str, device: torch.device, input_size: Sequence[int],
                   dynamic_size: bool = False) -> Runner:
    prepared, how = _prepared(model, device, precision)
    return inductor_runner(prepared, device, _DTYPES[precision], how, tuple(input_size), dynamic_size)


def _import(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise BackendUnavailable(f'this backend needs {module}: pip install "timm-sknet[{extra}]"') from None


#: how a model's outputs are laid out: 'tensor', 'list', or a dict's keys (a feature pyramid's levels, in order)
Layout = Union[str, Tuple[str, ...]]


def _layout(out: Outputs) -> Layout:
    return 'tensor' if isinstance(out, torch.Tensor) else tuple(out) if isinstance(out, dict) else 'list'


def _export_to_onnx(model: nn.Module, folder: Path, input_size: Sequence[int], fold: bool = True,
                    dynamic_size: bool = False) -> Tuple[Path, Layout]:
    source = (fuse_model(model) if fold else model).eval().cpu()
    path = export_onnx(source, folder / 'model.onnx', input_size=input_size, batch_size=1, dynamic_size=dynamic_size)
    with torch.inference_mode():
        layout = _layout(source(torch.zeros(1, *input_size)))
    return path, layout


def _numpy_runner(infer: Callable, layout: Layout, description: str, recipe: Recipe) -> Runner:
    """Outputs as the torch model gives them: one tensor, a list, or a dict by the same keys."""
    def run(x: torch.Tensor) -> Outputs:
        outs = [torch.from_numpy(o) for o in infer(x.detach().float().cpu().numpy())]
        if layout == 'tensor':
            return outs[0]
        return outs if layout == 'list' else OrderedDict(zip(layout, outs))
    return Runner(run, description, recipe=recipe)


def onnxruntime_runner(onnx_model: bytes, layout: Layout) -> Runner:
    """An onnxruntime session of the ONNX file's bytes (``InferenceSession.run`` is safe to call from threads)."""
    ort = _import('onnxruntime', 'onnxruntime')
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(onnx_model, options, providers=['CPUExecutionProvider'])

    def infer(x: np.ndarray) -> List[np.ndarray]:
        return session.run(None, {'input': x})
    return _numpy_runner(infer, layout, f'onnxruntime {ort.__version__} CPU, fp32',
                         recipe=(onnxruntime_runner, (onnx_model, layout)))


def build_onnxruntime(model: nn.Module, precision: str, input_size: Sequence[int],
                      dynamic_size: bool = False) -> Runner:
    _import('onnxruntime', 'onnxruntime')
    with tempfile.TemporaryDirectory() as tmp:
        path, layout = _export_to_onnx(model, Path(tmp), input_size, dynamic_size=dynamic_size)
        return onnxruntime_runner(path.read_bytes(), layout)


def _quantize_int8(ov_model: Any, calibration: Optional[Iterable[torch.Tensor]]) -> Any:
    if calibration is None:
        raise BackendUnavailable(
            "precision='int8' needs calibration images: pass calibration=<batches of preprocessed images, "
            "e.g. 300 images from your data> (the CLI uses --calibration-dir or the synthetic shapes)")
    nncf = _import('nncf', 'openvino')
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    batches = [b.detach().float().cpu().numpy() for b in calibration]
    if not batches:
        raise BackendUnavailable("precision='int8' got an empty calibration set; pass at least one batch")
    # Activation ranges from the calibration set's min and max (NNCF's default percentile ranges kept 96-99 % top-1
    # agreement on held-out shapes, depending on how the calibration images were batched), and the element-wise
    # ops (the SK select's arithmetic, residual adds) left in float: quantizing them cost 17 % of the int8 time
    # in re-quantization and some agreement (`timm-sknet bench int8-accuracy` and `bench inference` measure both).
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    eltwise = nncf.IgnoredScope(types=['Multiply', 'Add', 'Subtract'], validate=False)
    return nncf.quantize(ov_model, nncf.Dataset(batches), subset_size=len(batches),
                         preset=nncf.QuantizationPreset.PERFORMANCE, ignored_scope=eltwise,
                         advanced_parameters=advanced)


def openvino_model(model: nn.Module, precision: str, input_size: Sequence[int],
                   calibration: Optional[Iterable[torch.Tensor]] = None,
                   dynamic_size: bool = False) -> Tuple[Any, Layout]:
    """``(ov.Model, its outputs' layout)`` of ``model``: exported to ONNX (height and width symbolic with
    ``dynamic_size``), read by OpenVINO, int8-quantized if asked."""
    _import('openvino', 'openvino')
    with tempfile.TemporaryDirectory() as tmp:
        # NNCF's int8 statistics expect the attention's 1x1 convs on (B, C, 1, 1) maps, as in the plain
        # model; OpenVINO folds the BatchNorms itself
        path, layout = _export_to_onnx(model, Path(tmp), input_size, fold=precision != 'int8',
                                      dynamic_size=dynamic_size)
        ov_model = core().read_model(str(path))
    if precision == 'int8':
        ov_model = _quantize_int8(ov_model, calibration)
    return ov_model, layout


def openvino_hint(precision: str) -> str:
    """OpenVINO's inference precision for our precision: bf16 for bf16, and for int8 the ops NNCF leaves unquantized
    (the softmax, the selection) where the CPU has native bf16; f32 otherwise."""
    from .machine import native_bf16
    return 'bf16' if precision == 'bf16' or (precision == 'int8' and native_bf16()) else 'f32'


def openvino_runner(ov_model: Any, precision: str, layout: Layout) -> Runner:
    """A :class:`Runner` for an OpenVINO model on this CPU (see :func:`openvino_hint` and ``OpenVINOInfer``)."""
    ov = _import('openvino', 'openvino')
    hint = openvino_hint(precision)
    weights = 'int8 weights and activations (NNCF), ' if precision == 'int8' else ''
    return _numpy_runner(OpenVINOInfer(ov_model, hint), layout,
                         f'OpenVINO {ov.get_version().split("-")[0]} CPU, {weights}inference precision {hint}, '
                         f'batches > 1 as per-image requests on {torch.get_num_threads()} streams',
                         recipe=(_portable_openvino_runner, (PortableOVModel(ov_model), precision, layout)))


def _portable_openvino_runner(portable: PortableOVModel, precision: str, layout: Layout) -> Runner:
    return openvino_runner(portable.model, precision, layout)


def build_openvino(model: nn.Module, precision: str, input_size: Sequence[int],
                   calibration: Optional[Iterable[torch.Tensor]] = None, dynamic_size: bool = False) -> Runner:
    ov_model, layout = openvino_model(model, precision, input_size, calibration, dynamic_size)
    return openvino_runner(ov_model, precision, layout)


def build_runner(model: nn.Module, backend: str, precision: str, device: torch.device,
                 input_size: Sequence[int], calibration: Optional[Iterable[torch.Tensor]] = None,
                 dynamic_size: bool = False) -> Runner:
    """The :class:`Runner` of ``model`` on ``backend`` at ``precision`` (names as in :data:`BACKENDS`), for
    ``input_size`` or, with ``dynamic_size``, any height and width."""
    check_backend_precision(backend, precision)
    if backend in ('onnxruntime', 'openvino') and device.type != 'cpu':
        raise BackendUnavailable(f"backend={backend!r} runs on the CPU here; use backend='inductor' on {device.type}")
    if backend == 'eager':
        return build_eager(model, precision, device)
    if backend == 'inductor':
        return build_inductor(model, precision, device, input_size, dynamic_size)
    if backend == 'onnxruntime':
        return build_onnxruntime(model, precision, input_size, dynamic_size)
    if backend == 'openvino':
        return build_openvino(model, precision, input_size, calibration, dynamic_size)
    raise ValueError(f'backend must be one of {", ".join(BACKENDS)} or auto, got {backend!r}')
