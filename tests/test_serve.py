"""The HTTP service (``timm_sknet.serving.app``, ``timm-sknet serve``) on 127.0.0.1 with a real client (httpx2).

Concurrent clients each get the answer of the plain model called directly on the same file; every bad upload gets
its 4xx with a message, and the server answers correctly afterwards; the model is never called by more threads
than the limit; the command line serves from worker processes and stops on SIGINT. Servers listen on an
ephemeral port and are stopped by the tests, each within a time bound.
"""
import io
import os
import signal
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
import torch
from helpers import serving
from loopback_guard.sitecustomize import child_environment
from PIL import Image

import timm
from timm.data import create_transform, resolve_data_config

from timm_sknet.bench.serve import serving_process
from timm_sknet.cli import main
from timm_sknet.data.images import SAMPLES_DIR, load_image
from timm_sknet.data.labels import class_names
from timm_sknet.inference import optimize
from timm_sknet.serving.app import create_app

MODEL = 'sknet_tiny.synthetic'
SAMPLES = sorted(SAMPLES_DIR.glob('*.png'))


@pytest.fixture(scope='module')
def model():
    return timm.create_model(MODEL, pretrained=True).eval()


@pytest.fixture(scope='module')
def reference(model):
    """Per sample: the plain model's probabilities for the file, by the model's own preprocessing."""
    transform = create_transform(**resolve_data_config(model=model))
    with torch.inference_mode():
        return {p.name: model(transform(load_image(p))[None]).softmax(-1)[0] for p in SAMPLES}


def post(client, url: str, path: Path, raw: bool = False) -> httpx2.Response:
    data = path.read_bytes()
    if raw:
        return client.post(f'{url}/predict', content=data, headers={'content-type': 'image/png'})
    return client.post(f'{url}/predict', files={'file': (path.name, data, 'image/png')})


def assert_answer(response: httpx2.Response, probs: torch.Tensor, labels, k: int = 5):
    """The response is the top ``k`` of ``probs`` (the reference), most probable first, with the right labels."""
    assert response.status_code == 200, response.text
    predictions = response.json()['predictions']
    assert [p['index'] for p in predictions] == probs.topk(k).indices.tolist()
    assert [p['label'] for p in predictions] == [labels[p['index']] for p in predictions]
    assert [p['probability'] for p in predictions] == pytest.approx(probs.topk(k).values.tolist(), abs=1e-4)


@pytest.mark.parametrize('backend', ['eager', 'onnxruntime', 'openvino'])
def test_concurrent_clients_each_get_the_models_answer_for_their_image(model, reference, backend):
    config = resolve_data_config(model=model)
    optimized = optimize(model, backend, input_size=config['input_size'])
    labels = class_names(model)
    app = create_app(optimized, transform=create_transform(**config), labels=labels, concurrency=2)
    clients, requests = 4, 6

    def client(index):
        answers = []
        with httpx2.Client(timeout=30) as http:
            for i in range(requests):
                path = SAMPLES[(index * requests + i) % len(SAMPLES)]  # every client its own sequence of images
                answers.append((path, post(http, url, path, raw=i % 2 == 1)))
        return answers

    start = time.monotonic()
    with serving(app) as url, ThreadPoolExecutor(clients) as pool:
        answers = [a for future in [pool.submit(client, i) for i in range(clients)] for a in future.result(60)]
    assert len(answers) == clients * requests
    for path, response in answers:
        assert_answer(response, reference[path.name], labels)
    assert time.monotonic() - start < 60


def test_the_model_is_called_by_at_most_concurrency_threads_at_once(model):
    active, most, lock = [0], [0], threading.Lock()

    class Counting(torch.nn.Module):  # the real model, with a count of the threads inside it
        pretrained_cfg = model.pretrained_cfg
        num_classes = model.num_classes

        def forward(self, x):
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            time.sleep(0.05)  # long enough for the other clients' requests to arrive
            try:
                return model(x)
            finally:
                with lock:
                    active[0] -= 1

    with serving(create_app(Counting(), concurrency=2)) as url, ThreadPoolExecutor(6) as pool:
        def client(i):
            with httpx2.Client(timeout=30) as http:
                return [post(http, url, SAMPLES[i]).status_code for _ in range(2)]
        codes = [c for f in [pool.submit(client, i) for i in range(6)] for c in f.result(60)]
    assert codes == [200] * 12
    assert most[0] == 2


def _png(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` but whose pixel data is tiny: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + chunk(b'IEND', b''))


def _image(width: int, height: int) -> bytes:
    """A real PNG of ``width`` x ``height`` pixels."""
    out = io.BytesIO()
    Image.new('RGB', (width, height), (200, 40, 40)).save(out, 'PNG')
    return out.getvalue()


MAX_UPLOAD, MAX_PIXELS = 256 * 1024, 100_000
GOOD = SAMPLES[4].read_bytes()
BAD_UPLOADS = {  # name: (request arguments, status, a phrase the message must have)
    'not an image': (dict(content=b'hello, this is text'), 422, 'not an image'),
    'not an image, multipart': (dict(files={'file': ('notes.txt', b'plain text', 'text/plain')}), 422, 'not an image'),
    'truncated': (dict(content=GOOD[:len(GOOD) // 2]), 422, 'truncated'),
    'huge dimensions': (dict(content=_png(5_000, 5_000)), 422, 'over the limit of 100,000 pixels'),
    'beyond PIL\'s own bomb limit': (dict(content=_png(100_000, 100_000)), 422, 'decompression bomb'),
    'one pixel too many': (dict(content=_image(MAX_PIXELS // 250 + 1, 250)), 422, 'over the limit'),
    'empty body': (dict(content=b''), 400, 'empty upload'),
    'empty file': (dict(files={'file': ('a.png', b'', 'image/png')}), 400, 'empty upload'),
    'missing field': (dict(files={'image': ('a.png', GOOD, 'image/png')}), 400, "multipart field 'file'"),
    'no file in the field': (dict(data={'file': 'a.png'}, files={'other': ('a', b'x')}), 400, "field 'file'"),
    'too large': (dict(content=b'\0' * (MAX_UPLOAD + 1)), 413, 'larger than the limit'),
    'too large, chunked': (dict(content=iter([b'\0' * 65536] * 5)), 413, 'larger than the limit'),
}


@pytest.fixture(scope='module')
def strict_server(model):
    with serving(create_app(model, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS)) as url:
        yield url


@pytest.mark.parametrize('case', list(BAD_UPLOADS))
def test_a_bad_upload_gets_a_clear_4xx_and_the_server_keeps_serving(strict_server, reference, model, case):
    kwargs, status, phrase = BAD_UPLOADS[case]
    with httpx2.Client(timeout=30) as http:
        response = http.post(f'{strict_server}/predict', **kwargs)
        assert response.status_code == status, response.text
        assert phrase in response.json()['detail']
        assert_answer(post(http, strict_server, SAMPLES[4]), reference[SAMPLES[4].name], class_names(model))


def test_an_image_at_the_limits_is_served(strict_server):
    with httpx2.Client(timeout=30) as http:
        response = http.post(f'{strict_server}/predict', content=_image(MAX_PIXELS // 250, 250))
        assert response.status_code == 200, response.text
        health = http.get(f'{strict_server}/health').json()
    assert health['status'] == 'ok' and health['classes'] == 6 and health['concurrency'] == 1
    assert httpx2.get(f'{strict_server}/ready').json() == {'ready': True, 'status': 'ready'}


@pytest.mark.slow  # two worker processes import torch and build a model each: tens of seconds on a busy machine
@pytest.mark.parametrize('start', range(5))  # a worker lost at start-up showed in 2 of 3 starts on a busy machine
def test_the_command_line_serves_from_workers_that_start_once_and_stop_on_sigterm(reference, model, start):
    arguments = ['--model', MODEL, '--pretrained', '--backend', 'eager', '--workers', '2']
    log = []
    with serving_process(arguments, env=child_environment(dict(os.environ)), timeout=300, log=log,
                         stop=signal.SIGTERM) as url:
        with httpx2.Client(timeout=60) as http:
            for path in SAMPLES[:4]:
                assert_answer(post(http, url, path), reference[path.name], class_names(model))
    # leaving the block sent SIGTERM, and raised unless it ended with status 0
    text = ''.join(log)
    assert 'died' not in text and 'not ready in time' not in text, text
    assert text.count('timm-sknet: eager at fp32') == 2, text  # one model a worker, none in the parent


@pytest.mark.parametrize('flag', ['--workers', '--concurrency', '--max-pixels', '--worker-timeout', '--max-batch'])
def test_serve_refuses_a_count_below_one(capsys, flag):
    assert main(['serve', flag, '0']) == 2
    assert f'{flag} must be >= 1, got 0' in capsys.readouterr().err
