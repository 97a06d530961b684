"""The peer benchmark's bookkeeping: which path is best per precision, the ratios and the share of peak.

Timing itself is not tested (no timed tests); the quick end-to-end run is in test_cli.py.
"""
import pytest

from timm_sknet.tools.inference_benchmark import PathResult, gemm_peaks, markdown_report, summarize


def _r(owner, backend, precision, batch, ips):
    return PathResult(owner, backend, precision, batch, ips, 0.0, f'{backend} {precision}')


RESULTS = [
    _r('sknet', 'eager', 'fp32', 1, 18.0), _r('sknet', 'openvino', 'fp32', 1, 22.0),
    _r('timm', 'eager', 'fp32', 1, 15.0), _r('timm', 'inductor', 'fp32', 1, 31.0),
    _r('sknet', 'openvino', 'bf16', 1, 50.0), _r('timm', 'openvino', 'bf16', 1, 40.0),
    _r('sknet', 'openvino', 'int8', 1, 80.0),
    _r('sknet', 'openvino', 'fp32', 8, 30.0), _r('timm', 'openvino', 'fp32', 8, 20.0),
]


def test_summary_compares_our_best_with_the_best_peer_per_precision_and_batch():
    rows = {(r['precision'], r['batch_size']): r for r in summarize(RESULTS, {'fp32': 180.0, 'bf16': 720.0}, 9.0)}
    fp32 = rows[('fp32', 1)]
    assert (fp32['ours'], fp32['peer']) == ('sknet openvino fp32', 'timm inductor fp32')
    assert fp32['ratio'] == pytest.approx(22.0 / 31.0)
    assert fp32['share_of_peak'] == pytest.approx(22.0 * 9.0 / 180.0)
    assert rows[('bf16', 1)]['ratio'] == pytest.approx(50.0 / 40.0)
    assert rows[('bf16', 1)]['share_of_peak'] == pytest.approx(50.0 * 9.0 / 720.0)
    assert rows[('int8', 1)]['peer'] is None and rows[('int8', 1)]['share_of_peak'] is None
    assert rows[('fp32', 8)]['ratio'] == pytest.approx(1.5)
    assert ('bf16', 8) not in rows  # nothing of ours measured there


def test_markdown_report_lists_every_path_and_the_summary():
    result = dict(our_model='sknet50', timm_model='skresnext50_32x4d', image_size=224, threads=2, runs=9,
                  torch='2.x', timm='1.x', machine='CPU', gflop_per_image=8.93,
                  gemm=dict(peak_gflops={'fp32': 400.0, 'bf16': 720.0}),
                  results=[dict(name=f'{r.owner} {r.backend} {r.precision}', batch_size=r.batch_size,
                                images_per_s=r.images_per_s) for r in RESULTS],
                  summary=summarize(RESULTS, {'fp32': 400.0, 'bf16': 720.0}, 8.93))
    text = markdown_report(result)
    assert '| sknet openvino fp32 | 22.0 | 30.0 |' in text
    assert '| timm inductor fp32 | 31.0 | - |' in text
    assert '| fp32 | 1 | sknet openvino fp32 | 22.0 | timm inductor fp32 | 31.0 | 0.71x | 49 % |' in text


def test_gemm_peak_is_the_best_rate_of_each_precision():
    peaks = gemm_peaks(runs=1, shapes=((64, 64, 64), (128, 64, 32)))
    for precision in ('fp32', 'bf16'):
        rates = [v for k, v in peaks['rates'].items() if k.startswith(precision)]
        assert rates and peaks['peak_gflops'][precision] == max(rates) > 0
    assert any('onednn' in k for k in peaks['rates']) and any('blas' in k for k in peaks['rates'])
