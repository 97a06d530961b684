"""``timm_sknet.inference.optimize``: every backend and precision against the plain model, on small inputs.

The reference is always the plain (unfused, fp32, eager) model with the same weights. A backend is skipped
only when its runtime is not installed (the test extra installs them all); bf16 is skipped on CPUs without
native bf16, where optimize must refuse it instead (tested with the CPU's flags hidden).
"""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from helpers import randomize_batchnorm

import timm

import timm_sknet.inference.machine as machine_module
import timm_sknet.inference.optimized_model as optimize_module
from timm_sknet.data.synthetic import SyntheticShapes
from timm_sknet.inference import (
    TOLERANCES,
    BackendUnavailable,
    OptimizationError,
    choose_backend,
    native_bf16,
    optimize,
)
from timm_sknet.inference.machine import read_cpuinfo
from timm_sknet.inference.outputs import relative_error

SIZE = (3, 48, 48)
needs_bf16 = pytest.mark.skipif(not native_bf16(), reason='this CPU has no native bf16 (optimize refuses it)')


def _installed(name):
    return importlib.util.find_spec(name) is not None


def _backend_param(backend, precision):
    marks = []
    if backend in ('onnxruntime', 'openvino') and not _installed(backend):
        marks.append(pytest.mark.skip(reason=f'{backend} not installed'))
    if precision == 'bf16':
        marks.append(needs_bf16)
    return pytest.param(backend, precision, marks=marks, id=f'{backend}-{precision}')


@pytest.fixture(scope='module')
def classifier():
    torch.manual_seed(0)
    return randomize_batchnorm(timm.create_model('sknet18', layers=(1, 1, 1, 1), num_classes=10)).eval()


@pytest.fixture(scope='module')
def features():
    torch.manual_seed(1)
    model = timm.create_model('sknet50', layers=(1, 1, 1, 1), features_only=True, out_indices=(1, 3, 4))
    return randomize_batchnorm(model).eval()


def _check(optimized, model, precision, batch=3):
    x = torch.randn(batch, *SIZE, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref = model(x)
    out = optimized(x)
    assert relative_error(out, ref) <= TOLERANCES[precision]
    assert [t.dtype for t in ([out] if torch.is_tensor(out) else out)] == [torch.float32] * (1 if torch.is_tensor(out) else len(out))
    return out, ref


@pytest.mark.parametrize('backend, precision', [
    _backend_param('eager', 'fp32'), _backend_param('eager', 'bf16'),
    _backend_param('onnxruntime', 'fp32'),
    _backend_param('openvino', 'fp32'), _backend_param('openvino', 'bf16'),
])
def test_backend_matches_the_plain_model(classifier, features, backend, precision):
    for model in (classifier, features):
        optimized = optimize(model, backend, precision, input_size=SIZE)
        assert (optimized.backend, optimized.precision) == (backend, precision)
        if backend == 'eager':  # bf16 is the folded model in bfloat16, not float32 that passes the check
            dtype = torch.bfloat16 if precision == 'bf16' else torch.float32
            assert {p.dtype for p in optimized.module.parameters()} == {dtype}
        for batch in (1, 3):  # runtimes may treat one image and a batch differently (OpenVINO does)
            out, ref = _check(optimized, model, precision, batch=batch)
            if precision == 'fp32':  # fp32 must be exact up to reordering, not just within the loose tolerance
                assert relative_error(out, ref) <= 1e-4


# Optimizes several models one after another in one process, as an evaluation of checkpoints does, under dynamo's
# recompile limit lowered to 3 (the default is 8): three models at two batch sizes each (a static and a dynamic
# specialisation), and bf16 where asked and native, are more specialisations than that. Every output is checked against its own model, so a compiled graph that kept
# another model's frozen weights would fail too.
LONG_PROCESS = """
import copy, sys, torch, timm, timm_sknet
from timm_sknet.inference import TOLERANCES, native_bf16, optimize
from timm_sknet.inference.outputs import relative_error
torch._dynamo.config.recompile_limit = 3
for seed in range(3):
    torch.manual_seed(seed)
    model = timm.create_model('sknet18', layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), num_classes=5).eval()
    for bn in [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]:  # folding must matter
        torch.nn.init.uniform_(bn.weight, 0.5, 1.5), torch.nn.init.normal_(bn.bias, std=0.1)
        torch.nn.init.normal_(bn.running_mean, std=0.1), torch.nn.init.uniform_(bn.running_var, 0.5, 1.5)
    for precision in ['fp32'] + (['bf16'] if seed == 0 and sys.argv[1] == 'bf16' and native_bf16() else []):
        optimized = optimize(copy.deepcopy(model), backend='inductor', precision=precision, input_size=(3, 32, 32))
        for batch in (2, 3):
            x = torch.randn(batch, 3, 32, 32)
            with torch.inference_mode():
                error = relative_error(optimized(x), model(x))
            assert error <= TOLERANCES[precision], (seed, precision, batch, error)
print('ok')
"""


@pytest.mark.slow
@pytest.mark.parametrize('freezing_env, precisions', [('1', 'fp32'), (None, 'bf16')], ids=['FREEZING=1', 'default'])
def test_optimize_holds_in_a_long_process_past_dynamos_recompile_limit(freezing_env, precisions):
    """The inductor backend against the plain model, many times in one process. With TORCHINDUCTOR_FREEZING=1 dynamo guards frozen weights by identity: compiling the models' shared
    ``ResNet.forward`` crashed (FailOnRecompileLimitHit) once the entries of several models passed the limit."""
    env = {k: v for k, v in os.environ.items() if k != 'TORCHINDUCTOR_FREEZING'}
    if freezing_env:
        env['TORCHINDUCTOR_FREEZING'] = freezing_env
    proc = subprocess.run([sys.executable, '-c', LONG_PROCESS, precisions], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stderr[-3000:]


@pytest.mark.skipif(not (_installed('openvino') and _installed('nncf')), reason='openvino / nncf not installed')
def test_int8_keeps_the_embedded_models_accuracy_on_held_out_shapes():
    """The README's int8 figure: calibrate on 300 training-split shapes, evaluate on 600 held-out ones."""
    model = timm.create_model('sknet_tiny.synthetic', pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))

    def batches(split, n, seed):
        ds = SyntheticShapes(n, image_size=64, seed=seed, split=split, num_classes=6, transform=transform)
        return [torch.stack([ds[i][0] for i in range(j, min(j + 100, n))]) for j in range(0, n, 100)], ds.targets
    calibration, _ = batches('train', 300, 0)
    held_out, labels = batches('validation', 600, 0)
    int8 = optimize(model, 'openvino', 'int8', calibration=calibration)
    labels = torch.tensor(labels)
    with torch.inference_mode():
        ref = torch.cat([model(b) for b in held_out]).argmax(1)
    out = torch.cat([int8(b) for b in held_out]).argmax(1)
    fp32_top1, int8_top1 = (ref == labels).float().mean().item(), (out == labels).float().mean().item()
    assert fp32_top1 > 0.85, 'the embedded model itself works'
    assert int8_top1 >= fp32_top1 - 0.005
    assert (out == ref).float().mean().item() >= 0.99


def test_int8_needs_calibration_and_the_other_backends_say_where_it_runs(classifier):
    with pytest.raises(BackendUnavailable, match='calibration'):
        optimize(classifier, 'openvino', 'int8', input_size=SIZE)
    for backend in ('eager', 'inductor', 'onnxruntime'):
        with pytest.raises(BackendUnavailable, match="backend='openvino'"):
            optimize(classifier, backend, 'int8', input_size=SIZE)


def test_relative_error_is_the_largest_difference_over_the_largest_reference_value():
    """The one measure every tolerance of the package is stated in, on numbers worked out by hand."""
    assert relative_error(torch.tensor([[1., 2.]]), torch.tensor([[1., 4.]])) == 0.5   # 2 / 4
    features = [torch.tensor([0., 1.]), torch.tensor([10., 0.])]
    reference = [torch.tensor([0., 2.]), torch.tensor([8., 0.])]
    assert relative_error(features, reference) == 0.25                                   # max(1, 2) / 8
    with pytest.raises(RuntimeError, match='output shapes'):
        relative_error(torch.zeros(2, 3), torch.zeros(2, 4))


def test_a_result_outside_the_tolerance_is_refused(classifier, monkeypatch):
    monkeypatch.setitem(TOLERANCES, 'fp32', 0.0)  # even reordered sums now count as wrong
    with pytest.raises(OptimizationError, match='tolerance 0'):
        optimize(classifier, 'onnxruntime' if _installed('onnxruntime') else 'eager', 'fp32', input_size=SIZE)


def test_bf16_is_refused_on_a_cpu_without_native_bf16(classifier, monkeypatch):
    monkeypatch.setattr(optimize_module, 'native_bf16', lambda: False)
    with pytest.raises(BackendUnavailable, match="no native bf16.*precision='fp32'"):
        optimize(classifier, 'eager', 'bf16', input_size=SIZE)


def test_auto_says_what_it_picked_and_why(monkeypatch):
    installed = {'openvino': True, 'nncf': True}
    monkeypatch.setattr(optimize_module, '_installed', lambda name: installed.get(name, False))
    assert choose_backend('fp32', torch.device('cpu'))[0] == 'openvino'
    assert choose_backend('int8', torch.device('cpu'))[0] == 'openvino'
    installed['nncf'] = False  # OpenVINO alone runs fp32 and bf16; int8 needs NNCF as well
    assert choose_backend('bf16', torch.device('cpu'))[0] == 'openvino'
    with pytest.raises(BackendUnavailable, match='NNCF'):
        choose_backend('int8', torch.device('cpu'))
    installed['openvino'] = False
    backend, reason = choose_backend('fp32', torch.device('cpu'))
    assert backend == 'inductor' and 'not installed' in reason
    installed['onnxruntime'] = True  # faster than inductor in fp32, and has no bf16
    assert choose_backend('fp32', torch.device('cpu'))[0] == 'onnxruntime'
    assert choose_backend('bf16', torch.device('cpu'))[0] == 'inductor'
    with pytest.raises(BackendUnavailable, match='int8 needs OpenVINO'):
        choose_backend('int8', torch.device('cpu'))
    assert choose_backend('bf16', torch.device('cuda'))[0] == 'inductor'


@pytest.mark.skipif(not _installed('openvino'), reason='openvino not installed')
def test_auto_builds_what_it_names_and_exported_backends_refuse_another_size(classifier):
    optimized = optimize(classifier, input_size=SIZE)
    assert optimized.backend == choose_backend('fp32', torch.device('cpu'))[0]
    assert optimized.reason and optimized.backend in repr(optimized)
    with pytest.raises(ValueError, match=r'optimize again with input_size'):
        optimized(torch.randn(1, 3, 64, 64))


def test_unknown_backend_and_precision_are_named(classifier):
    with pytest.raises(ValueError, match='backend must be'):
        optimize(classifier, 'tensorrt', input_size=SIZE)
    with pytest.raises(ValueError, match='precision must be'):
        optimize(classifier, 'eager', 'fp16', input_size=SIZE)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512_bf16 avx512_vnni\n\n'
                       'processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu\n')
    model, flags = read_cpuinfo(str(cpuinfo))
    assert model == 'Test CPU 9000' and {'avx2', 'avx512_bf16', 'avx512_vnni'} <= flags
    assert read_cpuinfo(str(tmp_path / 'missing'))[1] == frozenset()


@pytest.mark.parametrize('flags, bf16, int8', [
    ('avx fma avx2', False, False),                                  # the AVX+FMA machine of this class
    ('avx fma avx2 avx512f avx512bw avx512_vnni', False, True),      # AVX-512 and VNNI, no BF16
    ('avx fma avx2 avx512f avx512bw avx512_vnni avx512_bf16', True, True),
    ('avx2 avx_vnni', False, True),
    ('amx_tile amx_bf16 amx_int8', True, True),
    ('fp asimd asimddp bf16 i8mm', True, True),                      # Arm (cpuinfo's "Features")
])
def test_native_bf16_and_int8_follow_the_cpus_flags(flags, bf16, int8, tmp_path, monkeypatch):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(f'processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n')
    real = machine_module.read_cpuinfo
    monkeypatch.setattr(machine_module, 'read_cpuinfo', lambda: real(str(cpuinfo)))
    machine_module.machine_info.cache_clear()
    try:
        assert (machine_module.native_bf16(), machine_module.native_int8()) == (bf16, int8)
    finally:
        machine_module.machine_info.cache_clear()


def test_int8_is_refused_when_top1_classes_change_even_within_the_tolerance():
    """Small logit errors can still swap close classes; int8 must keep >= 90 % of the plain model's top-1."""
    from timm_sknet.inference.backends import Runner
    from timm_sknet.inference.optimized_model import OptimizedModel, verify

    logits = torch.tensor([[1.0, 0.98, 0.0], [0.0, 1.0, 0.99]])
    model = torch.nn.Linear(1, 1)  # only its device and eval() are used besides the call below
    model.forward = lambda x: logits
    swapped = logits.clone()
    swapped[0, :2], swapped[1, 1:] = logits[0, :2].flip(0), logits[1, 1:].flip(0)  # top-1 of both rows moves
    runner = Runner(lambda x: swapped, 'stand-in runtime returning given logits')
    optimized = OptimizedModel(runner, 'openvino', 'int8', (3, 8, 8), 'test')
    with pytest.raises(OptimizationError, match='top-1 agreement 0%'):
        verify(optimized, model, torch.zeros(2, 3, 8, 8))
    assert verify(OptimizedModel(Runner(lambda x: logits, ''), 'openvino', 'int8', (3, 8, 8), ''), model,
                  torch.zeros(2, 3, 8, 8)) == 0.0
