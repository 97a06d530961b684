"""The service on Ray Serve (``timm_sknet.batch.ray_serve.Classifier``) on a local Ray bound to 127.0.0.1 (the
``local_ray`` fixture of tests/test_bulk_ray.py): its answers, over HTTP from a real client, equal those of the
app ``timm-sknet serve`` runs (``app_factory``) for the same images, with 2 replicas and requests batched."""
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from helpers import free_port, serving

from timm_sknet.data.images import SAMPLES_DIR

pytest.importorskip('ray.serve')
pytest.importorskip('grpc', reason="Ray Serve's extra packages: pip install 'ray[serve]'")
from test_bulk_ray import local_ray  # noqa: E402,F401  (the fixture)

MODEL = 'sknet_tiny.synthetic'
SAMPLES = sorted(SAMPLES_DIR.glob('*.png'))[:6]


@pytest.mark.slow  # Ray, its Serve controller, proxy and 2 replicas start: tens of seconds
def test_ray_serve_answers_as_timm_sknet_serve(local_ray):  # noqa: F811
    from ray import serve

    from timm_sknet.batch.ray_serve import Classifier
    from timm_sknet.cli.serve import app_factory

    with serving(app_factory('--model', MODEL, '--pretrained', '--backend', 'eager', '--topk', '3')) as url:
        expected = {p.name: httpx2.post(f'{url}/predict', content=p.read_bytes(), timeout=60).json()
                    for p in SAMPLES}
    port = free_port()
    serve.start(http_options={'host': '127.0.0.1', 'port': port})
    try:
        serve.run(Classifier.options(num_replicas=2, ray_actor_options={'num_cpus': 0.5}).bind(
            MODEL, pretrained=True, backend='eager', topk=3, max_batch=4, max_wait_ms=50))
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda p: httpx2.post(f'http://127.0.0.1:{port}/', content=p.read_bytes(),
                                                           timeout=120), SAMPLES))
        bad = httpx2.post(f'http://127.0.0.1:{port}/', content=b'not an image', timeout=60)
    finally:
        serve.shutdown()
    for path, answer in zip(SAMPLES, answers):
        assert answer.status_code == 200, answer.text
        got, want = answer.json()['predictions'], expected[path.name]['predictions']
        assert [(p['index'], p['wordnet_id'], p['label']) for p in got] == \
            [(p['index'], p['wordnet_id'], p['label']) for p in want]
        assert [p['probability'] for p in got] == pytest.approx([p['probability'] for p in want], abs=1e-5)
    assert bad.status_code == 422 and 'image' in bad.json()['detail']
