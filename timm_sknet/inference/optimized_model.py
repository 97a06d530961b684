"""One call to the fastest way to run an SKNet here: ``optimize(model, backend='auto', precision='fp32')``.

The result is checked against the plain model before it is returned (tolerances below, relative to the
largest output); a backend that cannot run, or a result that does not match, raises instead of returning
something wrong or slow. ``backend='auto'`` picks by what this machine and this install support, from
the measurements in ``benchmarks/`` (see :func:`choose_backend`), and says what it picked and why.

Tolerances (max |optimized - plain| / max |plain| over every output):

* fp32: 1e-4 (the same arithmetic, reordered);
* bf16: 5e-2 (8-bit mantissas through ~50 layers; measured 4e-3 to 1e-2 on sknet50 at 224);
* int8: 0.25, and the classifier's top-1 must agree with the plain model's on at least 90 % of the
  verification images (quantization error is larger; accuracy: ``timm-sknet bench int8-accuracy``).

Sharing: an optimized model may be called from any number of threads at once; it pickles (``pickle``,
``torch.save``, ``spawn`` workers) as what rebuilds it, and is rebuilt when loaded; in a forked child whose parent
ran its runtime, an OpenVINO or inductor model raises at once instead of hanging (:mod:`.forking`).
"""
import logging
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .backends import BackendUnavailable, Recipe, Runner, build_runner, check_backend_precision
from .export import resolve_input_size
from .forking import refuse_in_forked_child, started
from .machine import machine_info, native_bf16, native_int8
from .outputs import Outputs, relative_error

__all__ = ['TOLERANCES', 'OptimizationError', 'OptimizedModel', 'choose_backend', 'optimize']

_logger = logging.getLogger(__name__)

TOLERANCES = {'fp32': 1e-4, 'bf16': 5e-2, 'int8': 0.25}
#: int8 classifiers: least share of verification images whose top-1 class equals the plain model's
INT8_MIN_TOP1_AGREEMENT = 0.9


class OptimizationError(RuntimeError):
    """The optimized model does not match the plain one within the stated tolerance."""


class OptimizedModel(nn.Module):
    """A model run by a faster backend: call it with an input batch, get the plain model's outputs.

    Attributes:
        backend, precision: what runs it (``backend`` is never 'auto' here).
        input_size: (C, H, W) it was built and checked for; it accepts only that size, unless built with
            ``dynamic_size``: then any height and width (with C channels).
        description: the runtime and its settings, in words.
        reason: why this backend was chosen (``backend='auto'``) or that it was asked for.
        error: the verification error relative to the largest output of the plain model.
    """

    def __init__(self, runner: Runner, backend: str, precision: str, input_size: Tuple[int, ...], reason: str,
                 dynamic_size: bool = False):
        super().__init__()
        started(backend)
        self._runner = runner
        if runner.module is not None:
            self.module = runner.module
        self.backend, self.precision, self.input_size, self.reason = backend, precision, tuple(input_size), reason
        self.description, self.dynamic_size = runner.description, dynamic_size
        self.error: Optional[float] = None

    def _check_shape(self, x: torch.Tensor) -> None:
        """Refuse, before any runtime sees it, an input of another size than built for (each runtime fails its own
        way there, inductor's least clearly), or of other channels."""
        channels = self.input_size[0]
        if self.dynamic_size:
            if x.dim() != 4 or x.shape[1] != channels:
                raise ValueError(f'this {self.backend} model takes inputs of shape (N, {channels}, H, W), '
                                 f'got {tuple(x.shape)}')
        elif tuple(x.shape[1:]) != self.input_size or x.dim() != 4:
            raise ValueError(
                f'this {self.backend} model was built for inputs of shape (N, {", ".join(map(str, self.input_size))}), '
                f'got {tuple(x.shape)}; optimize again with input_size=(C, H, W) for that size, or with '
                'dynamic_size=True for any height and width')

    def forward(self, x: torch.Tensor) -> Outputs:
        self._check_shape(x)
        refuse_in_forked_child(self.backend)
        return self._runner.run(x)

    def __reduce__(self) -> Tuple[Callable[..., 'OptimizedModel'], Tuple[Any, ...]]:
        """Pickled as the recipe that builds the same runtime again (weights, ONNX bytes or OpenVINO IR)."""
        if self._runner.recipe is None:
            raise TypeError(f'this OptimizedModel ({self.description}) has no recipe to rebuild it from, so it '
                            'cannot be pickled; call optimize() in each process instead')
        return _rebuild, (self._runner.recipe, self.backend, self.precision, self.input_size, self.reason,
                          self.error, self.dynamic_size)

    def extra_repr(self) -> str:
        error = f', error {self.error:.2g}' if self.error is not None else ''
        size = f'input_size={self.input_size}' + (', dynamic_size' if self.dynamic_size else '')
        return f'backend={self.backend}, precision={self.precision}, {size}{error}: {self.description}'


def _rebuild(recipe: Recipe, backend: str, precision: str, input_size: Tuple[int, ...], reason: str,
             error: Optional[float], dynamic_size: bool = False) -> OptimizedModel:
    """Unpickling: the runtime built again from its recipe (it was verified when first optimized)."""
    refuse_in_forked_child(backend)
    build, args = recipe
    optimized = OptimizedModel(build(*args), backend, precision, input_size, reason, dynamic_size)
    optimized.error = error
    return optimized


def _installed(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def choose_backend(precision: str, device: torch.device) -> Tuple[str, str]:
    """The backend ``'auto'`` means for ``precision`` on ``device``, and why.

    From ``timm-sknet bench`` on the two CPUs of this project's machines (benchmarks/results, docs/inference.md):
    OpenVINO was the fastest runtime for sknet50 in bf16 and int8, and in fp32 at batch 8; at batch 1 in fp32
    onnxruntime (AVX-512 BF16 EPYC) or inductor (AMX Xeon) was up to 1.3x faster, a choice left to the caller
    since the batch size is not known here. Without OpenVINO: onnxruntime for fp32 (as fast as inductor, and
    built in seconds), inductor for bf16 (both beat eager). On a GPU, inductor.
    """
    if device.type != 'cpu':
        return 'inductor', f'on {device.type}, torch.compile (inductor) is the fast path'
    if _installed('openvino') and (precision != 'int8' or _installed('nncf')):
        note = (" (for single images in fp32, onnxruntime or inductor can be faster)" if precision == 'fp32' else '')
        return 'openvino', f'OpenVINO is installed and was the fastest {precision} runtime in the benchmark{note}'
    if precision == 'int8':
        raise BackendUnavailable('int8 needs OpenVINO and NNCF: pip install "timm-sknet[openvino]"')
    if precision == 'fp32' and _installed('onnxruntime'):
        return 'onnxruntime', ('OpenVINO is not installed (pip install "timm-sknet[openvino]"); onnxruntime was '
                               'the next fastest fp32 runtime')
    return 'inductor', 'OpenVINO is not installed (pip install "timm-sknet[openvino]"); inductor is the next fastest'


def _check_precision(precision: str, device: torch.device) -> None:
    if device.type != 'cpu':
        return
    info = machine_info()
    if precision == 'bf16' and not native_bf16():
        raise BackendUnavailable(
            f'this CPU ({info.cpu_model}; flags: {info.reported_flags}) has no native bf16 instructions '
            f'(AVX512_BF16, AMX or Arm BF16): bf16 would be emulated and slower than fp32. Use precision=\'fp32\'.')
    if precision == 'int8' and not native_int8():
        _logger.warning('this CPU has no int8 dot-product instructions (VNNI / AMX / I8MM): int8 may be slow')


def _top1_agreement(out: Outputs, ref: Outputs) -> Optional[float]:
    if not isinstance(ref, torch.Tensor) or not isinstance(out, torch.Tensor) or ref.dim() != 2:
        return None
    return float((out.argmax(-1) == ref.argmax(-1)).float().mean())


def verify(optimized: OptimizedModel, model: nn.Module, x: torch.Tensor) -> float:
    """Relative error of ``optimized`` against the plain ``model`` on ``x``; raises OptimizationError past the
    tolerance of its precision (and, for int8 classifiers, below the top-1 agreement)."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        ref = model.eval()(x.to(device))
    out = optimized(x)
    error = relative_error(out, ref)
    tolerance = TOLERANCES[optimized.precision]
    agreement = _top1_agreement(out, ref) if optimized.precision == 'int8' else None
    if error > tolerance or (agreement is not None and agreement < INT8_MIN_TOP1_AGREEMENT):
        extra = f', top-1 agreement {agreement:.0%}' if agreement is not None else ''
        raise OptimizationError(
            f'{optimized.backend} at {optimized.precision} differs from the plain model by {error:.3g} of the '
            f'largest output (tolerance {tolerance:g}{extra}); not returned. Try another backend or precision.')
    return error


def _verification_inputs(example_input: Optional[torch.Tensor], calibration: Optional[Sequence[torch.Tensor]],
                         precision: str, input_size: Sequence[int], dynamic_size: bool) -> List[torch.Tensor]:
    """The batch to verify on; with ``dynamic_size`` the same batch resized to an odd other size as well."""
    if example_input is not None:
        x = example_input
    elif precision == 'int8' and calibration:
        x = torch.cat(list(calibration))[:32]  # images like the ones it will see, not noise
    else:
        x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    if not dynamic_size:
        return [x]
    other = (x.shape[2] + 33, x.shape[3] + 17)  # odd, and not a multiple of any stride
    return [x, torch.nn.functional.interpolate(x, size=other, mode='bilinear', align_corners=False)]


def optimize(
        model: nn.Module,
        backend: str = 'auto',
        precision: str = 'fp32',
        *,
        input_size: Optional[Sequence[int]] = None,
        calibration: Optional[Iterable[torch.Tensor]] = None,
        example_input: Optional[torch.Tensor] = None,
        dynamic_size: bool = False,
) -> OptimizedModel:
    """``model`` prepared for the fastest inference ``backend`` offers at ``precision``, checked against it.

    Args:
        model: any sknet (classifier or ``features_only``), plain (not already fused); its device is used.
        backend: 'auto', 'eager', 'inductor', 'onnxruntime' or 'openvino'.
        precision: 'fp32', 'bf16' (CPUs with native bf16, GPUs) or 'int8' (OpenVINO + NNCF, CPU).
        input_size: (C, H, W) to build exported backends for; default: the model's pretrained_cfg.
        calibration: int8 only: batches of preprocessed images (what ``timm.data.create_transform`` makes),
            a few hundred images in all.
        example_input: a batch to verify on (default: random images; int8: the first calibration images).
        dynamic_size: build for any height and width, as detectors need (ONNX with symbolic height and width,
            inductor compiled for symbolic shapes), and verify at a second, odd size too. Without it the result
            refuses every other size, with this advice.

    Raises:
        BackendUnavailable: the backend or precision cannot run here; the message says what to do.
        OptimizationError: the result differs from the plain model beyond the stated tolerance.
    """
    device = next(model.parameters()).device
    check_backend_precision(backend, precision)
    _check_precision(precision, device)
    size = resolve_input_size(model, input_size)
    if backend == 'auto':
        backend, reason = choose_backend(precision, device)
    else:
        reason = f'backend={backend!r} was asked for'

    refuse_in_forked_child(backend)
    calibration = list(calibration) if calibration is not None else None
    model = model.eval()
    runner = build_runner(model, backend, precision, device, size, calibration, dynamic_size)
    optimized = OptimizedModel(runner, backend, precision, size, reason, dynamic_size)
    optimized.error = max(verify(optimized, model, x) for x in _verification_inputs(
        example_input, calibration, precision, size, dynamic_size))
    _logger.info('optimize: %s at %s (%s); %s; verified error %.2g', backend, precision, reason,
                 runner.description, optimized.error)
    return optimized

