"""The benchmark runs end to end and writes its JSON and markdown (tiny sizes: no speed is asserted)."""
import json

from timm_sknet.tools.benchmark import BenchCase, markdown_table, run_benchmark


def test_quick_benchmark_writes_json_and_table(tmp_path):
    cases = [BenchCase('eval', 1, True), BenchCase('train', 2, False)]
    result = run_benchmark(
        cases, quick=True, image_size=32, runs=1, json_path=tmp_path / 'b.json',
        markdown_path=tmp_path / 'b.md', log=lambda _: None)
    assert (result['timm_model'], result['our_model']) == ('skresnet18', 'sknet18')
    saved = json.loads((tmp_path / 'b.json').read_text())
    assert [r['case'] for r in saved['results']] == ['eval b1 channels_last', 'train b2 contiguous']
    for r in saved['results']:
        assert r['images_per_s']['timm'] > 0 and r['images_per_s']['sknet'] > 0
        assert r['ratio'] == r['images_per_s']['sknet'] / r['images_per_s']['timm']
        assert r['sgemm_gflops'] > 0 and all(v > 0 for v in r['peak_memory_mb'].values())
    table = (tmp_path / 'b.md').read_text()
    assert table.strip() == markdown_table(saved).strip()
    assert table.count('\n| ') == 2 + 1  # header row + one row per case
    assert sorted(p.name for p in tmp_path.iterdir()) == ['b.json', 'b.md']
