"""Batching across requests (``create_app(..., max_batch=, max_wait_ms=)``, ``timm_sknet.serving.batching``): the
images of concurrent requests go through the model together, and every request still gets the answer of the plain
model called on its own image alone, on 127.0.0.1 with real clients."""
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
import torch
from helpers import serving
from prometheus_client.parser import text_string_to_metric_families

import timm
from timm.data import create_transform, resolve_data_config

from timm_sknet.data.images import SAMPLES_DIR, load_image
from timm_sknet.data.labels import class_names
from timm_sknet.inference import optimize
from timm_sknet.serving.app import create_app

MODEL = 'sknet_tiny.synthetic'
SAMPLES = sorted(SAMPLES_DIR.glob('*.png'))[:4]


@pytest.fixture(scope='module')
def model():
    return timm.create_model(MODEL, pretrained=True).eval()


def batch_sizes(url: str):
    """(model calls, images) from the server's batch size histogram."""
    families = {f.name: f for f in text_string_to_metric_families(httpx2.get(f'{url}/metrics').text)}
    samples = {s.name: s.value for s in families['timm_sknet_batch_size'].samples}
    return samples['timm_sknet_batch_size_count'], samples['timm_sknet_batch_size_sum']


@pytest.mark.parametrize('backend', ['eager', 'onnxruntime', 'openvino'])
def test_batched_answers_equal_the_plain_models_per_image(model, backend):
    config = resolve_data_config(model=model)
    transform = create_transform(**config)
    with torch.inference_mode():  # the reference: the plain model, one image at a time
        inputs = {p.name: transform(load_image(p))[None] for p in SAMPLES}
        probs = {name: model(x).softmax(-1)[0] for name, x in inputs.items()}
        embeddings = {name: model.forward_head(model.forward_features(x), pre_logits=True)[0]
                      for name, x in inputs.items()}
    fast = optimize(model, backend, input_size=config['input_size'])
    app = create_app(fast, transform=transform, labels=class_names(model), embedder=model, topk=3,
                     max_batch=4, max_wait_ms=50, max_queue=64)

    def ask(i: int):
        path = SAMPLES[i % len(SAMPLES)]
        route = 'embed' if i % 4 == 3 else 'predict'
        return path.name, route, httpx2.post(f'{url}/{route}', content=path.read_bytes(), timeout=60)

    with serving(app) as url, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(ask, range(12)))
        calls, images = batch_sizes(url)
    assert images == 12 and calls < 12, 'no two requests shared a model call'
    for name, route, response in answers:
        assert response.status_code == 200, response.text
        if route == 'embed':
            torch.testing.assert_close(torch.tensor(response.json()['embedding']), embeddings[name],
                                       rtol=1e-4, atol=1e-4)
            continue
        predictions = response.json()['predictions']
        assert [p['index'] for p in predictions] == probs[name].topk(3).indices.tolist()
        assert [p['probability'] for p in predictions] == pytest.approx(probs[name].topk(3).values.tolist(),
                                                                        abs=1e-4)


def test_a_batch_is_at_most_max_batch_and_a_lone_request_waits_at_most_max_wait(model):
    sizes = []

    class Recording(torch.nn.Module):  # the real model, with a record of each call's batch size
        def forward(self, x):
            sizes.append(len(x))
            return model(x)
    app = create_app(Recording(), transform=create_transform(**resolve_data_config(model=model)),
                     labels=class_names(model), max_batch=3, max_wait_ms=20, max_queue=64)
    image = SAMPLES[0].read_bytes()
    with serving(app) as url:
        sizes.clear()  # the warm-up call
        assert httpx2.post(f'{url}/predict', content=image, timeout=30).status_code == 200
        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(lambda _: httpx2.post(f'{url}/predict', content=image, timeout=60).status_code,
                                     range(10)))
    assert statuses == [200] * 10
    assert sizes[0] == 1 and max(sizes) <= 3 and sum(sizes) == 11 and len(sizes) < 11, sizes


@pytest.mark.parametrize('kwargs, message', [(dict(max_batch=0), 'max_batch must be >= 1'),
                                             (dict(max_wait_ms=-1), 'max_wait_ms must be >= 0')])
def test_create_app_refuses_a_bad_batch_setting(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_app(model, **kwargs)


def test_the_command_line_batches_with_max_batch(model):
    from timm_sknet.cli.serve import app_factory
    app = app_factory('--model', MODEL, '--pretrained', '--backend', 'eager', '--max-batch', '4', '--max-wait-ms', '50')
    image = SAMPLES[1].read_bytes()
    transform = create_transform(**resolve_data_config(model=model))
    with torch.inference_mode():
        expected = model(transform(load_image(SAMPLES[1]))[None]).argmax(-1).item()
    with serving(app) as url, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: httpx2.post(f'{url}/predict', content=image, timeout=60), range(6)))
        calls, images = batch_sizes(url)
    assert [a.json()['predictions'][0]['index'] for a in answers] == [expected] * 6
    assert images == 6 and calls < 6


def test_the_command_line_refuses_a_negative_wait(capsys):
    from timm_sknet.cli import main
    assert main(['serve', '--max-wait-ms', '-1']) == 2
    assert '--max-wait-ms must be >= 0, got -1' in capsys.readouterr().err
