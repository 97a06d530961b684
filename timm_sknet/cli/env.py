"""``timm-sknet env``: what a bug report needs, as text or as JSON (``--json``).

Like ``hf env``, ``transformers env`` and ``python -m torch.utils.collect_env``: the versions of the package and of
what it runs on, Python and the OS, the CPU's instruction sets and the CUDA devices, the Hub cache and offline mode,
and which :func:`~timm_sknet.inference.optimize` backends and precisions would run here. That last part applies
``optimize``'s own rules (its refusals, ``choose_backend``, the CPU checks) without building anything.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from .. import __version__
from ..inference import (
    BACKENDS,
    PRECISIONS,
    BackendUnavailable,
    check_backend_precision,
    choose_backend,
    machine_info,
    native_bf16,
    native_int8,
)
from .arguments import SubParsers

__all__ = ['PACKAGES', 'collect', 'format_text', 'why_not']

#: distributions a report names: the package's dependencies, then the optional runtimes and integrations
PACKAGES = ('timm', 'torch', 'torchvision', 'huggingface-hub', 'safetensors', 'onnx', 'onnxruntime', 'openvino',
            'nncf', 'transformers')
#: modules a backend needs besides torch: the exported backends go through ONNX; int8 also needs NNCF
_NEEDS = {'onnxruntime': ('onnx', 'onnxruntime'), 'openvino': ('onnx', 'openvino')}


def _version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cxx() -> Tuple[str, Optional[str]]:
    """The C++ compiler inductor calls on the CPU (its config: ``$CXX`` or g++), and where it is, if found."""
    from torch._inductor import config
    name = config.cpp.cxx[-1] or 'g++'
    return name, shutil.which(name)


def why_not(backend: str, precision: str, device: str) -> Optional[str]:
    """Why ``optimize(model, backend, precision)`` would refuse on ``device`` ('cpu', 'cuda'); None when it runs."""
    try:
        check_backend_precision(backend, precision)
    except BackendUnavailable:
        return f'no {precision} path'
    if device != 'cpu' and backend in _NEEDS:
        return 'CPU only'
    if device == 'cpu' and precision == 'bf16' and not native_bf16():
        return 'no native bf16 on this CPU'
    needs = _NEEDS.get(backend, ()) + (('nncf',) if precision == 'int8' else ())
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        return f'not installed: {", ".join(missing)}'
    if backend == 'inductor' and device == 'cpu' and _cxx()[1] is None:
        return f'no C++ compiler ({_cxx()[0]}; set CXX)'
    return None


def _auto(precision: str, device: str) -> Optional[str]:
    """The backend ``backend='auto'`` picks, where that backend runs."""
    try:
        backend, _ = choose_backend(precision, torch.device(device))
    except BackendUnavailable:
        return None
    return backend if why_not(backend, precision, device) is None else None


def _optimize(devices: List[str]) -> Dict[str, Any]:
    return {device: {precision: {'auto': _auto(precision, device),
                                 'backends': {b: why_not(b, precision, device) or 'runs' for b in BACKENDS}}
                     for precision in PRECISIONS}
            for device in devices}


def _cuda() -> Dict[str, Any]:
    devices = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    return {
        'torch built with': torch.version.cuda,
        'cudnn': torch.backends.cudnn.version() if devices else None,
        'devices': [f'{d.name} (compute capability {d.major}.{d.minor}, {d.total_memory / 2**30:.1f} GiB)'
                    for d in devices],
    }


def collect() -> Dict[str, Any]:
    """Everything ``timm-sknet env`` reports, as plain data (what ``--json`` prints)."""
    from huggingface_hub import constants
    info = machine_info()
    return {
        'timm-sknet': {'version': __version__, 'location': str(Path(__file__).resolve().parents[1])},
        'packages': {name: _version(name) for name in PACKAGES},
        'python': platform.python_version(),
        'platform': platform.platform(),
        'cpu': {'model': info.cpu_model, 'cores': info.cores, 'torch threads': torch.get_num_threads(),
                'flags': [f for f in info.reported_flags.split() if f in info.flags],
                'torch capability': info.torch_capability, 'native bf16': native_bf16(),
                'native int8': native_int8(), 'C++ compiler': _cxx()[1]},
        'cuda': _cuda(),
        'hub': {'cache': constants.HF_HUB_CACHE, 'offline': constants.HF_HUB_OFFLINE, 'endpoint': constants.ENDPOINT},
        'environment': {k: v for k, v in sorted(os.environ.items()) if k.startswith('TIMM_SKNET_')},
        'optimize': _optimize(['cpu'] + (['cuda'] if torch.cuda.is_available() else [])),
    }


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, list):
        return ', '.join(map(str, value)) or 'none'
    return 'none' if value is None else str(value)


def _optimize_lines(optimize: Dict[str, Any]) -> List[str]:
    lines = ['- optimize (backends that would run, per precision; auto: what backend=\'auto\' picks):']
    for device, precisions in optimize.items():
        for precision, found in precisions.items():
            runs = [b for b, status in found['backends'].items() if status == 'runs']
            refused = [f'{b} ({status})' for b, status in found['backends'].items() if status != 'runs']
            lines.append(f'  - {device} {precision}: {", ".join(runs) or "none"}; auto: {_value(found["auto"])}'
                         + (f'; not: {", ".join(refused)}' if refused else ''))
    return lines


def format_text(report: Dict[str, Any]) -> str:
    """``report`` (from :func:`collect`) as the list a bug report quotes."""
    package = report['timm-sknet']
    lines = [f'- timm-sknet: {package["version"]} ({package["location"]})']
    lines += [f'- {name}: {version or "not installed"}' for name, version in report['packages'].items()]
    for section in ('python', 'platform', 'cpu', 'cuda', 'hub', 'environment'):
        value = report[section]
        if isinstance(value, dict):
            lines.append(f'- {section}:' + ('' if value else ' none set'))
            lines += [f'  - {key}: {_value(v)}' for key, v in value.items()]
        else:
            lines.append(f'- {section}: {_value(value)}')
    return '\n'.join(lines + _optimize_lines(report['optimize']))


def print_env(as_json: bool = False) -> None:
    """Print :func:`collect`'s report: as JSON, or as text to paste into an issue."""
    report = collect()
    print(json.dumps(report, indent=2) if as_json else format_text(report))


def run(args: argparse.Namespace) -> int:
    from .env import print_env
    print_env(as_json=args.json)
    return 0


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser('env', help='versions, machine, Hub cache and the optimize backends that run here: '
                                   'paste it into a bug report')
    p.add_argument('--json', action='store_true', help='print the same as JSON')
    p.set_defaults(func=run)
