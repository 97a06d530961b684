"""The benchmark's bookkeeping: best paths, ratios, share of peak, the report format, and that every runner runs.

Timing itself is not tested (no timed tests): the figures are the benchmark's output, in benchmarks/results. The
serve runner's figures are only checked to be consistent with each other (units, Little's law within 10x).
"""
import json
import os
import threading
import time

import pytest
import torch
from helpers import serving
from loopback_guard.sitecustomize import child_environment

import timm

from timm_sknet.bench.concurrency import ConcurrencyRunner, concurrent_rate
from timm_sknet.bench.inference import summarize
from timm_sknet.bench.report import Report, markdown, write_report
from timm_sknet.bench.serve import Load, ServeRunner, load_clients
from timm_sknet.bench.timing import gemm_peaks, time_alternating
from timm_sknet.serving.app import create_app


def _row(path, batch, ips):
    return dict(path=path, batch=batch, images_per_s=ips, error=0.0, runs_as=path)


ROWS = [
    _row('sknet eager fp32', 1, 18.0), _row('sknet openvino fp32', 1, 22.0),
    _row('timm eager fp32', 1, 15.0), _row('timm inductor fp32', 1, 31.0),
    _row('sknet openvino bf16', 1, 50.0), _row('timm openvino bf16', 1, 40.0),
    _row('sknet openvino int8', 1, 80.0),
    _row('sknet openvino fp32', 8, 30.0), _row('timm openvino fp32', 8, 20.0),
]


def test_summary_compares_our_best_with_the_best_peer_per_precision_and_batch():
    rows = {(r['precision'], r['batch']): r for r in summarize(ROWS, {'fp32': 180.0, 'bf16': 720.0}, 9.0)}
    fp32 = rows[('fp32', 1)]
    assert (fp32['ours'], fp32['peer']) == ('sknet openvino fp32', 'timm inductor fp32')
    assert fp32['ratio'] == pytest.approx(22.0 / 31.0)
    assert fp32['share_of_peak'] == pytest.approx(22.0 * 9.0 / 180.0)
    assert rows[('bf16', 1)]['ratio'] == pytest.approx(50.0 / 40.0)
    assert rows[('bf16', 1)]['share_of_peak'] == pytest.approx(50.0 * 9.0 / 720.0)
    assert rows[('int8', 1)]['peer'] is None and rows[('int8', 1)]['share_of_peak'] is None
    assert rows[('fp32', 8)]['ratio'] == pytest.approx(1.5)
    assert ('bf16', 8) not in rows  # nothing of ours measured there


def test_markdown_and_json_hold_every_table_row_and_the_machine(tmp_path):
    machine = dict(description='CPU X, 2 cores', threads=2, torch='2.x', timm='1.x', peak_gflops={'fp32': 400.0})
    report = Report('Title line', machine, {'paths': ROWS[:2], 'empty': []})
    json_path, md_path = write_report(report, tmp_path / 'out')
    assert json.loads(json_path.read_text()) == {'title': 'Title line', 'machine': machine,
                                                 'tables': {'paths': ROWS[:2], 'empty': []}}
    text = md_path.read_text()
    assert text.strip() == markdown(report).strip() and text.startswith('Title line\n')
    assert 'CPU X, 2 cores; 2 threads' in text and 'fp32 400' in text
    assert '| path | batch | images_per_s | error | runs_as |' in text
    assert '| sknet eager fp32 | 1 | 18.0 | 0.00 | sknet eager fp32 |' in text
    assert 'empty' not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.json', 'out.md']


def test_time_alternating_calls_in_rotation_and_reports_medians():
    calls = []
    result = time_alternating({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}, runs=3, warmup=1)
    assert calls == ['a', 'b'] * 4
    assert set(result) == {'a', 'b'} and all(v >= 0 for v in result.values())


def test_gemm_peak_is_measured_per_precision_the_machine_runs():
    peaks = gemm_peaks(shapes=((64, 64, 64), (128, 64, 32)), runs=1)
    assert peaks['fp32'] > 0 and set(peaks) <= {'fp32', 'bf16'}


def test_concurrent_rate_counts_every_call_of_every_thread_with_its_own_input():
    seen = []
    lock = threading.Lock()

    def model(x):
        with lock:
            seen.append(int(x[0, 0]))
        time.sleep(0.01)  # each call takes time, so the overhead around the timed part is small beside it
    inputs = [torch.full((2, 1), float(i)) for i in range(3)]
    began = time.perf_counter()
    rate = concurrent_rate(model, inputs, calls=4)
    elapsed = time.perf_counter() - began
    assert sorted(seen) == [0] * 4 + [1] * 4 + [2] * 4
    assert rate * elapsed >= 3 * 4 * 2  # images over a time no longer than the whole call


def test_concurrency_runner_reports_each_caller_count_against_one_caller():
    report = ConcurrencyRunner(quick=True, paths=[('eager', 'fp32')], callers=(1, 2), log=lambda line: None).run()
    rows = report.tables['throughput']
    assert [(r['path'], r['callers']) for r in rows] == [('eager fp32', 1), ('eager fp32', 2)]
    assert rows[0]['vs_one_caller'] == 1.0
    assert rows[1]['vs_one_caller'] == rows[1]['images_per_s'] / rows[0]['images_per_s']


def test_load_clients_counts_every_answer_and_every_failure():
    from timm_sknet.data.images import SAMPLES_DIR
    image = sorted(SAMPLES_DIR.glob('*.png'))[0].read_bytes()
    with serving(create_app(timm.create_model('sknet_tiny.synthetic', pretrained=True).eval(), concurrency=2)) as url:
        good = load_clients(url, image, clients=2, requests=6)
        good += load_clients(url, image, clients=2, requests=5)
        bad = load_clients(url, b'not an image', clients=2, requests=3).summary()
    assert len(good.timings) == 11 and good.seconds >= max(t for t, _ in good.timings)
    good = good.summary()
    assert (good['requests'], good['failed']) == (11, 0)
    assert (bad['requests'], bad['failed']) == (3, 3)
    assert 0 < good['p50_ms'] <= good['p99_ms']
    # closed loop (each client sends its next request on the answer): throughput x latency ~ clients (Little's law)
    assert 0.3 < good['requests_per_s'] * good['p50_ms'] / 1000 / 2 < 3


def test_the_serve_runner_measures_the_real_server_at_each_client_count():
    report = ServeRunner('sknet_tiny', quick=True, env=child_environment(dict(os.environ)), log=lambda _: None).run()
    rows = report.tables['latency and throughput']
    assert [(r['clients'], r['requests'], r['failed']) for r in rows] == [(1, 4, 0), (2, 4, 0)]
    assert all(r['setup'].startswith('1 worker(s) x 1 call(s)') and r['p50_ms'] <= r['p99_ms'] for r in rows)
    assert 'sknet_tiny' in report.title and report.machine['description']


@pytest.mark.slow  # two servers (and LitServe where installed) start and take 1 and 4 clients
def test_the_load_runner_measures_serve_with_and_without_batching_and_counts_errors_apart():
    from timm_sknet.bench.load import LoadRunner
    report = LoadRunner('sknet_tiny', quick=True, env=child_environment(dict(os.environ)), log=lambda _: None).run()
    rows = report.tables['load']
    servers = sorted({r['server'] for r in rows})
    assert servers[:2] == ['timm-sknet serve --max-batch 1', 'timm-sknet serve --max-batch 8'], servers
    assert [r['clients'] for r in rows] == [c for c in (1, 4) for _ in servers]
    for row in rows:  # closed loop for half a second: each client sent at least one request
        assert row['requests'] >= row['clients'] and row['errors'] == 0 and row['p50_ms'] <= row['p99_ms']
    assert 'load average' in report.title


def test_load_clients_for_a_duration_sends_at_least_one_request_per_client():
    from timm_sknet.data.images import SAMPLES_DIR
    image = sorted(SAMPLES_DIR.glob('*.png'))[0].read_bytes()
    with serving(create_app(timm.create_model('sknet_tiny.synthetic', pretrained=True).eval())) as url:
        load = load_clients(url, image, clients=3, seconds=0.3)
    assert len(load.timings) >= 3 and load.seconds >= 0.3 and {s for _, s in load.timings} == {200}


def test_load_summary_is_numpys_median_and_nearest_rank_percentile():
    import random

    import numpy as np
    rng = random.Random(0)
    seconds = [rng.uniform(0.01, 2.0) for _ in range(157)]
    load = Load([(s, 200) for s in seconds] + [(0.5, 422), (0.7, 503)], seconds=40.0)
    summary = load.summary()
    ms = np.array(seconds + [0.5, 0.7]) * 1000
    assert (summary['requests'], summary['failed'], summary['refused'], summary['errors']) == (159, 2, 1, 1)
    assert summary['p50_ms'] == pytest.approx(np.median(ms))
    assert summary['p99_ms'] == pytest.approx(np.percentile(ms, 99, method='nearest'))
    assert summary['requests_per_s'] == pytest.approx(159 / 40.0)


def test_backbone_runner_measures_optimize_built_for_any_size_against_one_size():
    from timm_sknet.bench.backbone import BackboneRunner
    report = BackboneRunner(quick=True, optimize_backends=('eager', 'onnxruntime'), log=lambda _: None).run()
    (rows,) = report.tables.values()
    assert [r['backend'] for r in rows] == ['eager', 'onnxruntime']
    for r in rows:
        assert r['new_size'] == '53x101' and r['dynamic_x'] == pytest.approx(r['static_ms'] / r['dynamic_ms'])
        assert min(r['static_ms'], r['dynamic_ms'], r['new_size_first_call_ms'], r['new_size_ms']) > 0
    assert 'load average' in markdown(report)
