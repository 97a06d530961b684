"""``timm-sknet env`` tells the truth: versions as the imported modules state them, the Hub settings it was started
with, the CPU's flags as /proc/cpuinfo lists them, and optimize backends that are refused or run as it says."""
import json
import os
import subprocess
import sys

import pytest
import torch

import timm

import timm_sknet
from timm_sknet.cli import env, main
from timm_sknet.inference import BackendUnavailable, machine, optimize
from timm_sknet.inference.backends import build_runner
from timm_sknet.inference.machine import _REPORTED_FLAGS, MachineInfo

SIZE = (3, 64, 64)
#: distribution -> the module whose ``__version__`` states it (a second source beside the installed metadata)
MODULES = {'timm': 'timm', 'torch': 'torch', 'torchvision': 'torchvision', 'huggingface-hub': 'huggingface_hub',
           'safetensors': 'safetensors', 'onnx': 'onnx', 'onnxruntime': 'onnxruntime', 'openvino': 'openvino',
           'nncf': 'nncf', 'transformers': 'transformers'}


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    """``python -m timm_sknet env --json`` in a fresh process started offline, with its own Hub cache."""
    cache = tmp_path_factory.mktemp('hub')
    run_env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_HUB_CACHE': str(cache), 'TIMM_SKNET_AUTOLOAD': '1'}
    proc = subprocess.run([sys.executable, '-m', 'timm_sknet', 'env', '--json'], capture_output=True, text=True,
                          env=run_env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), cache


def test_versions_are_those_of_the_imported_modules(report):
    info, _ = report
    assert info['timm-sknet']['version'] == timm_sknet.__version__
    assert info['timm-sknet']['location'] == os.path.dirname(timm_sknet.__file__)
    assert set(info['packages']) == set(MODULES)
    for distribution, module in MODULES.items():
        stated = __import__(module).__version__
        assert info['packages'][distribution] == stated.split('+')[0].split('-')[0], distribution
    assert info['python'] == '.'.join(map(str, sys.version_info[:3]))


def test_hub_settings_and_variables_are_the_ones_it_started_with(report):
    info, cache = report
    assert info['hub']['cache'] == str(cache) and info['hub']['offline'] is True
    assert info['environment'] == {'TIMM_SKNET_AUTOLOAD': '1'}


def test_cpu_and_cuda_are_what_the_system_says(report):
    info, _ = report
    with open('/proc/cpuinfo') as f:
        flags = set(next(line for line in f if line.startswith(('flags', 'Features'))).split(':', 1)[1].split())
    assert info['cpu']['flags'] == [f for f in _REPORTED_FLAGS if f in flags]
    assert info['cpu']['cores'] == os.cpu_count()
    assert info['cpu']['native bf16'] == bool(flags & {'avx512_bf16', 'amx_bf16', 'bf16'})
    assert len(info['cuda']['devices']) == torch.cuda.device_count()
    assert list(info['optimize']) == ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def test_the_text_says_what_the_json_says(capsys):
    assert main(['env']) == 0
    text = capsys.readouterr().out
    report = env.collect()
    for name, version in report['packages'].items():
        assert f'\n- {name}: {version or "not installed"}\n' in text
    assert f'- timm-sknet: {timm_sknet.__version__} (' in text
    assert f'  - cache: {report["hub"]["cache"]}\n' in text
    fp32 = report['optimize']['cpu']['fp32']
    assert f'  - cpu fp32: {", ".join(b for b, s in fp32["backends"].items() if s == "runs")}; auto: {fp32["auto"]}' \
        in text


@pytest.fixture(scope='module')
def tiny():
    return timm.create_model('sknet_tiny').eval()


def _refusals_agree(tiny, device: str = 'cpu') -> None:
    """Every backend / precision env calls refused is refused by optimize itself (refusals come before any build)."""
    for precision, found in env.collect()['optimize'][device].items():
        for backend, status in found['backends'].items():
            if status != 'runs':
                with pytest.raises(BackendUnavailable):
                    optimize(tiny, backend, precision, input_size=SIZE)


def test_backends_it_refuses_optimize_refuses_and_those_it_runs_run(tiny):
    _refusals_agree(tiny)
    found = env.collect()['optimize']['cpu']['fp32']
    for backend in ('eager', 'onnxruntime', 'openvino'):  # inductor runs too, but compiling takes a minute
        if found['backends'][backend] == 'runs':
            assert optimize(tiny, backend, 'fp32', input_size=SIZE).backend == backend
    assert optimize(tiny, 'auto', 'fp32', input_size=SIZE).backend == found['auto']


def test_a_missing_runtime_is_named_and_auto_moves_on(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, 'openvino', None)  # import fails, find_spec finds nothing
    monkeypatch.setitem(sys.modules, 'nncf', None)
    assert env.why_not('openvino', 'fp32', 'cpu') == 'not installed: openvino'
    assert env.why_not('openvino', 'int8', 'cpu') == 'not installed: openvino, nncf'
    report = env.collect()['optimize']['cpu']
    assert report['int8']['auto'] is None and report['fp32']['auto'] == 'onnxruntime'
    _refusals_agree(tiny)
    assert optimize(tiny, 'auto', 'fp32', input_size=SIZE).backend == 'onnxruntime'


def test_nncf_alone_missing_refuses_int8_only(monkeypatch):
    monkeypatch.setitem(sys.modules, 'nncf', None)
    assert env.why_not('openvino', 'int8', 'cpu') == 'not installed: nncf'
    assert env.why_not('openvino', 'fp32', 'cpu') is None


def test_a_cpu_without_bf16_refuses_bf16_everywhere(tiny, monkeypatch):
    avx_only = MachineInfo(cpu_model='an AVX-only CPU', cores=2, flags=frozenset({'avx', 'fma'}))
    monkeypatch.setattr(machine, 'machine_info', lambda: avx_only)
    bf16 = env.collect()['optimize']['cpu']['bf16']
    assert set(bf16['backends'].values()) == {'no native bf16 on this CPU', 'no bf16 path'} and bf16['auto'] is None
    _refusals_agree(tiny)


def test_exported_backends_are_cpu_only_on_a_gpu(tiny):
    for backend in ('onnxruntime', 'openvino'):
        assert env.why_not(backend, 'fp32', 'cuda') == 'CPU only'
        with pytest.raises(BackendUnavailable):  # refused before anything touches the device
            build_runner(tiny, backend, 'fp32', torch.device('cuda'), SIZE)
    assert env.why_not('inductor', 'fp32', 'cuda') is None


def test_inductor_without_a_compiler_is_named():
    from torch._inductor import config
    with config.patch({'cpp.cxx': (None, 'no-such-compiler++')}):  # inductor's own way back (monkeypatch deleted it)
        assert env.why_not('inductor', 'fp32', 'cpu') == 'no C++ compiler (no-such-compiler++; set CXX)'
        assert env.why_not('eager', 'fp32', 'cpu') is None
    assert config.cpp.cxx[-1] != 'no-such-compiler++'
