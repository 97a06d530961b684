"""Optimized models shared as users share PyTorch modules: many threads, forked and spawned workers, pickle.

Every backend installed here is built once (a small sknet18 with trained-looking BatchNorms) and checked
against the plain model with the same weights, per caller: a wrong result, another caller's result, an
exception or a hang (every wait is bounded) fails. In a child forked after the parent ran it, OpenVINO and
inductor hang (measured), so there they must refuse at once; onnxruntime and eager must work.
"""
import importlib.util
import os
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from helpers import randomize_batchnorm
from torch.utils.data import DataLoader, Dataset

import timm

from timm_sknet.inference import TOLERANCES, BackendUnavailable, OptimizedModel, optimize
from timm_sknet.inference.outputs import relative_error

SIZE = (3, 32, 32)
THREADS, CALLS = 4, 12
WAIT_S = 300  # a deadlock fails the test instead of stopping the suite
FORK_SAFE = ('eager', 'onnxruntime')


def _backends():
    for backend in ('eager', 'inductor', 'onnxruntime', 'openvino'):
        installed = backend in ('eager', 'inductor') or importlib.util.find_spec(backend) is not None
        yield pytest.param(backend, marks=[] if installed else [pytest.mark.skip(reason=f'{backend} not installed')])


BACKENDS = list(_backends())


@pytest.fixture(scope='module')
def plain():
    torch.manual_seed(0)
    model = timm.create_model('sknet18', layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), num_classes=7)
    return randomize_batchnorm(model).eval()


@pytest.fixture(scope='module')
def optimized(plain):
    built = {}

    def get(backend: str) -> OptimizedModel:
        if backend not in built:
            built[backend] = optimize(plain, backend, input_size=SIZE)
        return built[backend]
    return get


def _inputs(backend):
    """One input per thread, all different; batch sizes 1 and > 1 (OpenVINO runs them differently), except for
    inductor, which is called at the batch size it was verified at (each new one is a compilation of seconds)."""
    sizes = (2, 2, 2, 2) if backend == 'inductor' else (1, 3, 1, 2)
    return [torch.randn(n, *SIZE, generator=torch.Generator().manual_seed(10 + i)) for i, n in enumerate(sizes)]


def _reference(plain, inputs):
    with torch.inference_mode():
        return [plain(x) for x in inputs]


@pytest.mark.parametrize('backend', BACKENDS)
def test_threads_calling_at_once_each_get_their_own_correct_output(plain, optimized, backend):
    model, inputs = optimized(backend), _inputs(backend)
    refs = _reference(plain, inputs)
    start = threading.Barrier(THREADS)

    def caller(i):
        start.wait(timeout=WAIT_S)
        return [relative_error(model(inputs[i]), refs[i]) for _ in range(CALLS)]

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(caller, i) for i in range(THREADS)]
        errors = [f.result(timeout=WAIT_S) for f in futures]  # re-raises what a caller raised
    worst = max(max(e) for e in errors)
    assert worst <= TOLERANCES['fp32'], f'{backend}: a caller got an output {worst:.3g} off its own reference'
    # the outputs differ between callers, so a result handed to the wrong caller cannot pass the check above
    assert min(relative_error(refs[0], r) for r in refs[1:] if r.shape == refs[0].shape) > 10 * TOLERANCES['fp32']


def test_inductor_freezing_is_set_per_compiled_model_not_globally(plain, optimized):
    """Freezing is an option of the compiled model: calls leave inductor's global setting as the user set it."""
    from torch._inductor import config
    before = config.freezing
    optimized('inductor')(torch.randn(2, *SIZE))
    assert config.freezing == before


@pytest.mark.parametrize('backend', BACKENDS)
def test_pickled_model_is_rebuilt_and_gives_the_same_outputs(plain, optimized, backend):
    model = optimized(backend)
    loaded = pickle.loads(pickle.dumps(model))
    assert isinstance(loaded, OptimizedModel) and loaded is not model
    assert (loaded.backend, loaded.precision, loaded.input_size, loaded.error) == (
        model.backend, model.precision, model.input_size, model.error)
    x = _inputs(backend)[1]
    (ref,) = _reference(plain, [x])
    assert relative_error(loaded(x), ref) <= TOLERANCES['fp32']


def test_a_model_without_a_recipe_says_what_to_do_instead_of_pickling():
    from timm_sknet.inference.backends import Runner
    model = OptimizedModel(Runner(lambda x: x, 'a stand-in runtime'), 'eager', 'fp32', SIZE, '')
    with pytest.raises(TypeError, match='call optimize\\(\\) in each process'):
        pickle.dumps(model)


class _Calls(Dataset):
    """Item i: the optimized model's output for input i, computed in the DataLoader's worker process."""

    def __init__(self, model, inputs):
        self.model, self.inputs = model, inputs

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        return os.getpid(), self.model(self.inputs[i])


def _load_all(model, inputs, context):
    loader = DataLoader(_Calls(model, inputs), batch_size=None, num_workers=2, multiprocessing_context=context,
                        timeout=WAIT_S)
    return list(loader)


@pytest.mark.parametrize('backend', BACKENDS)
def test_in_forked_dataloader_workers_a_model_runs_or_refuses_at_once(plain, optimized, backend):
    model, inputs = optimized(backend), _inputs(backend)
    if backend in FORK_SAFE:
        results = _load_all(model, inputs, 'fork')
        assert all(pid != os.getpid() for pid, _ in results)
        assert max(relative_error(out, ref) for (_, out), ref in zip(results, _reference(plain, inputs))) <= 1e-4
    else:
        with pytest.raises(BackendUnavailable, match="forked child.*'spawn'"):
            _load_all(model, inputs, 'fork')


class _Optimizes(Dataset):
    """Item i: optimize() called in the worker process, as a worker that builds its own model would."""

    def __init__(self, plain, backend):
        self.plain, self.backend = plain, backend

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return optimize(self.plain, self.backend, input_size=SIZE).backend


@pytest.mark.parametrize('backend', ['openvino', 'inductor'])
def test_building_in_a_forked_child_of_a_parent_that_ran_the_runtime_refuses_at_once(plain, optimized, backend):
    if backend == 'openvino' and importlib.util.find_spec('openvino') is None:
        pytest.skip('openvino not installed')
    optimized(backend)  # the parent has run it
    loader = DataLoader(_Optimizes(plain, backend), batch_size=None, num_workers=1, multiprocessing_context='fork',
                        timeout=WAIT_S)
    with pytest.raises(BackendUnavailable, match='does not survive fork'):
        list(loader)


@pytest.mark.slow
def test_spawned_workers_rebuild_every_backend_from_the_pickle(plain, optimized):
    """One spawned worker (its start-up is the cost) receives every optimized model and runs each; inductor's
    rebuild, a compilation of its own, is tested in this process (test_pickled_model_is_rebuilt...)."""
    backends = [p.values[0] for p in BACKENDS if not p.marks and p.values[0] != 'inductor']
    inputs = [x for backend in backends for x in _inputs(backend)[:2]]
    models = [optimized(backend) for backend in backends for _ in range(2)]
    loader = DataLoader(_Pairs(models, inputs), batch_size=None, num_workers=1, multiprocessing_context='spawn',
                        timeout=WAIT_S)
    results = list(loader)
    assert all(pid != os.getpid() for pid, _ in results)
    errors = [relative_error(out, ref) for (_, out), ref in zip(results, _reference(plain, inputs))]
    assert max(errors) <= TOLERANCES['fp32'], dict(zip([m.backend for m in models], errors))


class _Pairs(_Calls):
    """Item i: model i on input i (models pickled once with the dataset, into the spawned worker)."""

    def __getitem__(self, i):
        return os.getpid(), self.model[i](self.inputs[i])
