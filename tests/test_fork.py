"""A model called in a child forked after its parent ran it runs (torch on one thread there, as in DataLoader
workers: ``timm_sknet.after_fork``) or refuses at once (OpenVINO, inductor), for every backend; never hangs.
gunicorn's ``--preload`` with a warm-up call in the parent serves from every worker.

Every wait is bounded: a child that has not answered in time is killed and the test fails with 'hung'.
"""
import os
import pickle
import select
import signal
import subprocess
import sys
import time

import httpx2
import pytest
import torch
from helpers import free_port
from loopback_guard.sitecustomize import child_environment

import timm

from timm_sknet.data.images import SAMPLES_DIR
from timm_sknet.inference import optimize

MODEL = 'sknet_tiny.synthetic'
SAMPLE = sorted(SAMPLES_DIR.glob('*.png'))[0]


def in_forked_child(function, timeout: float = 60):
    """``function()``'s result in a child forked now, or the exception it raised; fails if the child hangs."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, whatever happens, then leave without pytest's cleanup
        try:
            os.close(read)
            try:
                answer = ('ran', function())
            except Exception as e:  # noqa: BLE001  (the parent checks what it was)
                answer = ('raised', f'{type(e).__name__}: {e}')
            os.write(write, pickle.dumps(answer))
        finally:
            os._exit(0)
    os.close(write)
    start = time.monotonic()
    try:
        ready, _, _ = select.select([read], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f'the forked child hung: no answer within {timeout} s')
        data = b''
        while chunk := os.read(read, 1 << 16):
            data += chunk
        return pickle.loads(data), time.monotonic() - start
    finally:
        os.close(read)
        os.waitpid(pid, 0)


@pytest.fixture(scope='module')
def model():
    return timm.create_model(MODEL, pretrained=True).eval()


@pytest.mark.parametrize('backend', ['plain', 'eager', 'onnxruntime', 'openvino',
                                     pytest.param('inductor', marks=pytest.mark.slow)])
def test_a_model_the_parent_ran_runs_or_refuses_at_once_in_a_forked_child(model, backend):
    assert torch.get_num_threads() > 1 or os.cpu_count() == 1, 'one thread in the parent cannot show the hang'
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    runnable = model if backend == 'plain' else optimize(model, backend, input_size=(3, 64, 64))
    with torch.inference_mode():
        expected = runnable(x)  # the parent runs it first: its thread pools start

    def call():
        with torch.inference_mode():
            return torch.get_num_threads(), runnable(x)
    (what, answer), seconds = in_forked_child(call)
    if backend in ('openvino', 'inductor'):
        assert what == 'raised' and 'does not survive fork' in answer, answer
        assert seconds < 10  # at once, not after a timeout
    else:
        assert what == 'ran', answer
        threads, got = answer
        assert threads == 1  # as in DataLoader workers
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # gunicorn's master builds the model; workers fork from it, one per request
def test_gunicorn_preload_with_a_warm_up_in_the_parent_serves_from_every_worker(model):
    pytest.importorskip('uvicorn_worker')
    port = free_port()
    url = f'http://127.0.0.1:{port}'
    factory = f'timm_sknet.cli.serve:app_factory("--model", "{MODEL}", "--pretrained", "--backend", "eager")'
    # --preload: the factory runs in gunicorn's master, after a warm-up call there has started torch's thread pool;
    # --max-requests 1: each worker answers one request and is replaced by a new fork of the master
    warm_up = f'import timm, timm_sknet, torch; timm.create_model("{MODEL}").eval()(torch.zeros(2, 3, 64, 64))'
    proc = subprocess.Popen(
        [sys.executable, '-c', f'{warm_up}; import sys; from gunicorn.app.wsgiapp import run; sys.exit(run())',
         '-k', 'uvicorn_worker.UvicornWorker', '-w', '2', '--preload', '--max-requests', '1',
         '-b', f'127.0.0.1:{port}', '--timeout', '60', factory],
        stderr=subprocess.PIPE, text=True, env=child_environment(dict(os.environ)))
    statuses = []
    try:
        deadline = time.monotonic() + 180
        while len(statuses) < 4:  # 4 answers from 4 forked workers
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, 'the workers did not answer (hung after fork?)'
            try:
                statuses.append(httpx2.post(f'{url}/predict?topk=1', content=SAMPLE.read_bytes(),
                                            timeout=30).status_code)
            except httpx2.TransportError:  # not listening yet, or a worker replaced
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    assert statuses == [200] * 4
