"""The bulk job on Ray Data (docs/bulk-inference.md): ``map_batches`` with an actor pool, one
:class:`~timm_sknet.batch.predictor.BatchPredictor` (so one optimized model) per actor, on a local Ray of 2 CPUs.
Its rows and embeddings equal the single-process ``timm-sknet predict``'s on the same images, bad ones included.

Loopback only: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's single-machine mode, every Ray process bound to
127.0.0.1 (otherwise Ray binds the machine's address, and the loopback guard stops its agents); Ray's worker
processes run under the guard too (``child_environment``), and usage stats are off. Every process of the Ray
session is gone when the test ends.
"""
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from loopback_guard.sitecustomize import child_environment

from timm_sknet.cli import main
from timm_sknet.data.images import SAMPLES_DIR

ray = pytest.importorskip('ray')
pytest.importorskip('ray.data')

SAMPLES = sorted(SAMPLES_DIR.glob('*.png'))


def _session_processes(session_dir: str):
    """pids of live processes whose command line names the Ray session (gcs, raylet, agents, workers)."""
    pids = []
    for proc in Path('/proc').iterdir():
        try:
            if proc.name.isdigit() and session_dir.encode() in (proc / 'cmdline').read_bytes() and \
                    (proc / 'stat').read_text().split(') ', 1)[1][0] != 'Z':
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def local_ray(monkeypatch):
    from ray._private import ray_constants
    for key, value in child_environment(dict(os.environ)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', '0')
    monkeypatch.setattr(ray_constants, 'ENABLE_RAY_CLUSTER', False)  # read from the variable when ray was imported
    monkeypatch.setenv('RAY_USAGE_STATS_ENABLED', '0')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    session_dir = ray._private.worker._global_node.get_session_dir_path()
    try:
        yield
    finally:
        ray.shutdown()
        deadline = time.monotonic() + 30
        while _session_processes(session_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert _session_processes(session_dir) == [], 'Ray processes outlived ray.shutdown()'


def test_ray_data_predictions_equal_the_clis(local_ray, tmp_path, capsys):
    from timm_sknet.batch.predictor import BatchPredictor
    images = tmp_path / 'images'
    images.mkdir()
    for sample in SAMPLES[:7]:
        shutil.copy(sample, images / sample.name)
    (images / '03_bad.png').write_text('not an image')  # sorted among the good ones: a batch mixes good and bad
    paths = sorted(images.iterdir())

    options = dict(model='sknet_tiny.synthetic', pretrained=True, backend='eager', topk=3, embeddings=True)
    ds = ray.data.from_items([{'path': str(p)} for p in paths])
    rows = ds.map_batches(BatchPredictor, fn_constructor_kwargs=options, batch_size=3,
                          compute=ray.data.ActorPoolStrategy(size=2)).take_all()

    rc = main(['predict', str(images), '--model', 'sknet_tiny.synthetic', '--pretrained', '--topk', '3',
               '--workers', '0', '--output', str(tmp_path / 'cli.jsonl'), '--embeddings', str(tmp_path / 'cli.npy')])
    assert rc == 1, capsys.readouterr().err
    cli = [json.loads(line) for line in (tmp_path / 'cli.jsonl').read_text().splitlines()]
    cli_embeddings = dict(zip((r['path'] for r in cli), np.load(tmp_path / 'cli.npy')))
    cli_errors = (tmp_path / 'cli.errors.csv').read_text()

    by_path = {row['path']: row for row in rows}
    assert sorted(by_path) == list(map(str, paths))  # one row per path, the bad one included
    bad = by_path.pop(str(images / '03_bad.png'))
    assert 'not an image' in bad['error'] and bad['error'] in cli_errors
    assert bad['index_1'] == -1 and np.isnan(bad['probability_1']) and np.isnan(bad['embedding']).all()
    assert sorted(by_path) == [r['path'] for r in cli]
    for expected in cli:
        got = by_path[expected['path']]
        assert got['error'] == ''
        for key, value in expected.items():
            if key.startswith('probability'):
                assert float(got[key]) == pytest.approx(value, rel=1e-5)
            else:
                assert (got[key].item() if hasattr(got[key], 'item') else got[key]) == value, key
        np.testing.assert_allclose(got['embedding'], cli_embeddings[expected['path']], rtol=1e-5, atol=1e-6)
