"""Save a model as OpenVINO IR (``model.xml`` + ``model.bin``) at fp32, bf16 or int8, checked before it is kept.

The IR is what OpenVINO deployments load (``ov.Core().read_model(folder / 'model.xml')``). Precision is a
setting of OpenVINO's compiler, not of the file, so compile it as it was checked (:func:`compile_config`):
``{'INFERENCE_PRECISION_HINT': 'f32'}`` for fp32 (on CPUs with native bf16 OpenVINO otherwise runs f32
models in bf16, which is the 'bf16' export), ``'bf16'`` for bf16, and for int8 bf16 where the CPU has it
(the ops NNCF leaves unquantized), else f32. The weights stay f32 (bf16 needs no other file); int8 holds
NNCF's quantized graph. The folder is written through ``file_io.atomic_folder`` only after the saved files,
read back and compiled, matched the plain model.
"""
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Union

import torch
from torch import nn

from ..file_io import atomic_folder
from .backends import openvino_hint, openvino_model, openvino_runner
from .export import resolve_input_size
from .openvino_runtime import core
from .optimized_model import OptimizationError, OptimizedModel, verify

__all__ = ['compile_config', 'export_openvino']


def compile_config(precision: str) -> Dict[str, str]:
    """The OpenVINO compile setting each precision's export is checked under, on this machine."""
    return {'INFERENCE_PRECISION_HINT': openvino_hint(precision)}


def export_openvino(model: nn.Module, out_dir: Union[str, Path], *, precision: str = 'fp32',
                    input_size: Optional[Sequence[int]] = None,
                    calibration: Optional[Iterable[torch.Tensor]] = None, dynamic_size: bool = False) -> Path:
    """Write ``out_dir/model.xml`` and ``model.bin``; raise (writing nothing) if they do not match ``model``.

    With ``dynamic_size`` the IR takes any height and width (from an ONNX export with them symbolic), and it is
    checked at ``input_size`` and at a second, odd size.
    """
    import openvino as ov
    size = resolve_input_size(model, input_size)
    ov_model, layout = openvino_model(model.eval(), precision, size, calibration, dynamic_size=dynamic_size)
    g = torch.Generator().manual_seed(0)
    checks = [torch.cat(list(calibration))[:8] if calibration else torch.randn(2, *size, generator=g)]
    if dynamic_size:
        checks.append(torch.randn(2, size[0], size[1] + 33, size[2] + 17, generator=g))
    with atomic_folder(out_dir) as tmp:
        ov.save_model(ov_model, str(tmp / 'model.xml'), compress_to_fp16=False)
        runner = openvino_runner(core().read_model(str(tmp / 'model.xml')), precision, layout)
        saved = OptimizedModel(runner, 'openvino', precision, size, 'the saved IR', dynamic_size=dynamic_size)
        try:
            for x in checks:  # the same check, tolerances and int8 top-1 agreement as optimize()
                verify(saved, model, x)
        except OptimizationError as e:
            raise OptimizationError(f'the saved OpenVINO model: {e} Nothing was written to {out_dir}.') from None
    return Path(out_dir)
