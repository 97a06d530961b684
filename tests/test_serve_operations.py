"""The service as an operator runs it: readiness and draining, backpressure, metrics, the answers' schema, gunicorn,
and errors that say what to do (``timm_sknet.serving``, ``timm-sknet serve``), on 127.0.0.1 with real clients.

Slow or gated stand-ins wrap the real model, so that requests are in flight when the test needs them to be.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import jsonschema
import pytest
import torch
from helpers import free_port, serving
from loopback_guard.sitecustomize import child_environment
from prometheus_client.parser import text_string_to_metric_families

import timm
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from timm_sknet.cli import main
from timm_sknet.data.images import SAMPLES_DIR, load_image
from timm_sknet.data.labels import class_names
from timm_sknet.inference import optimize
from timm_sknet.serving.app import create_app

MODEL = 'sknet_tiny.synthetic'
SAMPLE = sorted(SAMPLES_DIR.glob('*.png'))[4]


@pytest.fixture(scope='module')
def model():
    return timm.create_model(MODEL, pretrained=True).eval()


def stand_in(model, delay: float = 0.0, gate: threading.Event = None):
    """``model`` behind a sleep of ``delay`` s, or a wait on ``gate`` once it is armed (``stand_in.armed = True``)."""
    class StandIn(torch.nn.Module):
        pretrained_cfg, num_classes, armed = model.pretrained_cfg, model.num_classes, False

        def forward(self, x):
            time.sleep(delay)
            if gate is not None and self.armed:
                assert gate.wait(30), 'the test never opened the gate'
            return model(x)
    return StandIn()


def metric(url: str, name: str, **labels) -> float:
    """A sample's value in the server's /metrics text, read with prometheus_client's own parser."""
    text = httpx2.get(f'{url}/metrics').text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def wait_for(condition, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'the condition never held'
        time.sleep(0.02)


def test_a_full_server_answers_503_before_reading_the_upload_and_bad_uploads_do_not_wait(model):
    gate = threading.Event()
    gated = stand_in(model, gate=gate)
    with serving(create_app(gated, concurrency=1, max_queue=2)) as url, ThreadPoolExecutor(3) as pool:
        gated.armed = True
        image = SAMPLE.read_bytes()
        first = pool.submit(httpx2.post, f'{url}/predict', content=image, timeout=60)
        wait_for(lambda: metric(url, 'timm_sknet_queue_depth') == 0 and metric(
            url, 'timm_sknet_requests_total', route='/metrics') > 1)  # the first request holds the model
        start = time.monotonic()
        bad = httpx2.post(f'{url}/predict', content=b'not an image at all', timeout=10)
        assert bad.status_code == 422 and 'not an image' in bad.json()['detail']
        assert time.monotonic() - start < 5  # the model slot is still held: it did not wait for it
        waiting = [pool.submit(httpx2.post, f'{url}/predict', content=image, timeout=60) for _ in range(2)]
        wait_for(lambda: metric(url, 'timm_sknet_queue_depth') == 2)
        with socket.create_connection(('127.0.0.1', int(url.rsplit(':', 1)[1])), timeout=10) as raw:
            raw.sendall(b'POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n'
                        b'Content-Length: 10000000\r\n\r\n')  # and never the body
            answer = raw.recv(65536).decode()
        assert answer.startswith('HTTP/1.1 503'), answer
        assert 'retry-after: 1' in answer.lower()
        gate.set()
        assert [f.result(60).status_code for f in [first, *waiting]] == [200] * 3
    # scraped under load above; the counts of what happened
        assert metric(url, 'timm_sknet_requests_total', route='/predict', status='200') == 3
        assert metric(url, 'timm_sknet_requests_total', route='/predict', status='422') == 1
        assert metric(url, 'timm_sknet_requests_total', route='/predict', status='503') == 1
        assert metric(url, 'timm_sknet_rejected_total', reason='full') == 1
        assert metric(url, 'timm_sknet_model_seconds_count') == 3
        assert metric(url, 'timm_sknet_request_seconds_count', route='/predict') == 5


def test_64_clients_against_a_queue_of_4_get_200s_and_fast_503s_only(model):
    slow = stand_in(model, delay=0.2)
    with serving(create_app(slow, concurrency=1, max_queue=4)) as url, ThreadPoolExecutor(64) as pool:
        def client(_):
            start = time.monotonic()
            response = httpx2.post(f'{url}/predict', content=SAMPLE.read_bytes(), timeout=120)
            return response.status_code, time.monotonic() - start, response.headers.get('retry-after')
        answers = list(pool.map(client, range(64)))
    codes = [code for code, _, _ in answers]
    assert set(codes) == {200, 503}, codes
    assert codes.count(200) >= 5
    assert all(retry == '1' for code, _, retry in answers if code == 503)
    ok = sorted(t for code, t, _ in answers if code == 200)
    refused = sorted(t for code, t, _ in answers if code == 503)
    assert refused[len(refused) // 2] < ok[len(ok) // 2], (refused, ok)  # a 503 does not wait for the model


DRAINING_SERVER = '''
import sys, time, timm, torch, uvicorn
import timm_sknet
from timm_sknet.serving.app import create_app
model = timm.create_model('sknet_tiny.synthetic', pretrained=True).eval()
class Slow(torch.nn.Module):
    pretrained_cfg, num_classes = model.pretrained_cfg, model.num_classes
    def forward(self, x):
        time.sleep(1.0)
        return model(x)
uvicorn.run(create_app(Slow(), max_queue=8), host='127.0.0.1', port=int(sys.argv[1]), timeout_graceful_shutdown=20)
'''


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    def ready():
        assert proc.poll() is None, proc.stderr.read()
        try:
            return httpx2.get(f'{url}/ready', timeout=10).status_code == 200
        except httpx2.TransportError:
            return False
    wait_for(ready, timeout)


def test_on_sigterm_ready_turns_503_new_requests_are_refused_and_in_flight_ones_finish(tmp_path):
    port = free_port()
    url = f'http://127.0.0.1:{port}'
    proc = subprocess.Popen([sys.executable, '-c', DRAINING_SERVER, str(port)], stderr=subprocess.PIPE, text=True,
                            env=child_environment(dict(os.environ)))
    try:
        wait_ready(url, proc)
        with ThreadPoolExecutor(3) as pool:
            in_flight = [pool.submit(httpx2.post, f'{url}/predict', content=SAMPLE.read_bytes(), timeout=60)
                         for _ in range(3)]
            wait_for(lambda: metric(url, 'timm_sknet_queue_depth') == 2)  # one in the model, two waiting
            proc.send_signal(signal.SIGTERM)
            for method, route in (('GET', '/ready'), ('POST', '/predict')):
                try:  # 503 until the listening socket closes, refused after
                    assert httpx2.request(method, f'{url}{route}', content=b'x', timeout=10).status_code == 503
                except httpx2.TransportError:
                    pass
            assert [f.result(60).status_code for f in in_flight] == [200] * 3
        assert proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        proc.kill()
        proc.wait()


def test_predict_embed_and_topk_answer_as_the_openapi_schema_says():
    model = timm.create_model('sknet_tiny', num_classes=1000).eval()  # an ImageNet head: WordNet ids
    transform = create_transform(**resolve_data_config(model=model))
    x = transform(load_image(SAMPLE))[None]
    with torch.inference_mode():
        probs = model(x).softmax(-1)[0]
        embedding = model.forward_head(model.forward_features(x), pre_logits=True)[0]
    info, labels = ImageNetInfo(), class_names(model)
    with serving(create_app(model)) as url, httpx2.Client(timeout=30) as http:
        schema = http.get(f'{url}/openapi.json').json()
        answers = {'/predict': http.post(f'{url}/predict?topk=3', content=SAMPLE.read_bytes()),
                   '/embed': http.post(f'{url}/embed', files={'file': ('a.png', SAMPLE.read_bytes())}),
                   '/health': http.get(f'{url}/health'), '/ready': http.get(f'{url}/ready')}
        out_of_range = [http.post(f'{url}/predict?topk={k}', content=b'x') for k in (0, 1001)]
    predictions = answers['/predict'].json()['predictions']
    assert [p['index'] for p in predictions] == probs.topk(3).indices.tolist()
    assert [p['wordnet_id'] for p in predictions] == [info.index_to_label_name(p['index']) for p in predictions]
    assert [p['label'] for p in predictions] == [labels[p['index']] for p in predictions]
    assert [p['probability'] for p in predictions] == pytest.approx(probs.topk(3).values.tolist(), abs=1e-5)
    assert answers['/embed'].json()['embedding'] == pytest.approx(embedding.tolist(), abs=1e-4)
    assert answers['/embed'].json()['dim'] == model.num_features
    for response in out_of_range:
        assert response.status_code == 422 and 'topk' in response.json()['detail']
    paths = schema['paths']
    assert [p['name'] for p in paths['/predict']['post']['parameters']] == ['topk']
    assert paths['/predict']['post']['parameters'][0]['schema']['maximum'] == 1000
    for route, response in answers.items():
        method = 'post' if route in ('/predict', '/embed') else 'get'
        documented = paths[route][method]['responses'][str(response.status_code)]['content']['application/json']
        jsonschema.validate(response.json(), {**documented['schema'], 'components': schema['components']})
    for response in out_of_range:
        documented = paths['/predict']['post']['responses']['422']['content']['application/json']
        jsonschema.validate(response.json(), {**documented['schema'], 'components': schema['components']})


def test_an_optimized_model_without_an_embedder_answers_501_on_embed(model):
    config = resolve_data_config(model=model)
    fast = optimize(model, 'eager', input_size=config['input_size'])
    with serving(create_app(fast, transform=create_transform(**config), labels=class_names(model))) as url:
        response = httpx2.post(f'{url}/embed', content=SAMPLE.read_bytes(), timeout=30)
        assert httpx2.post(f'{url}/predict', content=SAMPLE.read_bytes(), timeout=30).status_code == 200
    assert response.status_code == 501 and 'embedder=' in response.json()['detail']


@pytest.mark.parametrize('kwargs', [dict(num_classes=0), dict(features_only=True)])
def test_create_app_refuses_a_model_without_a_classifier(kwargs):
    with pytest.raises(ValueError, match='has no classifier'):
        create_app(timm.create_model('sknet_tiny', **kwargs).eval())


@pytest.mark.parametrize('request_kwargs, phrase', [
    (dict(content=b'--x\r\n', headers={'content-type': 'multipart/form-data'}), 'Missing boundary'),
    (dict(files=[('file', ('a.png', b'1')), ('file', ('b.png', b'2'))]), 'Too many files'),
])
def test_starlettes_own_400s_say_what_to_send(model, request_kwargs, phrase):
    with serving(create_app(model)) as url:
        response = httpx2.post(f'{url}/predict', timeout=30, **request_kwargs)
    assert response.status_code == 400
    assert phrase in response.json()['detail'] and "curl -F file=@image.jpg" in response.json()['detail']


def test_a_port_in_use_is_an_error_line_before_any_model_is_built(capsys):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(['serve', '--model', MODEL, '--backend', 'eager', '--port', str(port)]) == 2
    err = capsys.readouterr().err
    assert f'timm-sknet: error: cannot listen on 127.0.0.1:{port}' in err and '--port' in err
    assert 'eager at fp32' not in err  # no model was built


@pytest.mark.slow  # gunicorn's worker imports torch and builds the model: seconds to tens of seconds
def test_gunicorn_with_uvicorn_workers_serves_the_app_factory(model):
    pytest.importorskip('uvicorn_worker')
    port = free_port()
    url = f'http://127.0.0.1:{port}'
    factory = f'timm_sknet.cli.serve:app_factory("--model", "{MODEL}", "--pretrained", "--backend", "eager")'
    proc = subprocess.Popen([sys.executable, '-m', 'gunicorn', '-k', 'uvicorn_worker.UvicornWorker', '-w', '1',
                             '-b', f'127.0.0.1:{port}', '--timeout', '300', factory], stderr=subprocess.PIPE,
                            text=True, env=child_environment(dict(os.environ)))
    try:
        wait_ready(url, proc)
        answer = httpx2.post(f'{url}/predict?topk=1', content=SAMPLE.read_bytes(), timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    transform = create_transform(**resolve_data_config(model=model))
    with torch.inference_mode():
        expected = model(transform(load_image(SAMPLE))[None]).argmax(-1).item()
    assert answer.status_code == 200 and answer.json()['predictions'][0]['index'] == expected
