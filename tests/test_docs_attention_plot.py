"""docs/attention.md's plot stays true: docs/img/attention.csv is what the page's command gives today.

The page shows docs/img/attention.png, drawn by ``timm-sknet attention`` from the embedded
``sknet_tiny.synthetic`` (weights inside the package, images generated, no network), and links the CSV the same
command writes beside it. This test runs the command again, in-process, into a temporary folder, and compares
its CSV with the committed one: the same rows, units and settings, and the numbers within ``TOLERANCE``. The
pixels are not compared (they depend on matplotlib and its fonts); the data drawn are.

When the model, the analysis or the synthetic images change on purpose, regenerate both files from the
repository root with ``COMMAND`` and check the page's text against the new plot.
"""
import copy
import csv
import shlex
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from timm_sknet.cli import main

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / 'docs' / 'attention.md'
COMMITTED_CSV = REPO / 'docs' / 'img' / 'attention.csv'
COMMITTED_PNG = REPO / 'docs' / 'img' / 'attention.png'
COMMAND = 'timm-sknet attention --model sknet_tiny.synthetic --pretrained --synthetic 128 --out docs/img'
#: absolute, for attention differences of 0.01 to 0.2 written with 6 decimals: room for another CPU's rounding,
#: none for another model, image set or analysis
TOLERANCE = 1e-4
NUMBERS = ('mean_diff', 'std_diff')


def _read(path: Path) -> List[Dict[str, str]]:
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


def differences(got: List[Dict[str, str]], want: List[Dict[str, str]], tolerance: float) -> List[str]:
    """What differs between two scale-analysis CSVs: rows, non-numeric fields exactly, numbers within tolerance."""
    if len(got) != len(want):
        return [f'{len(got)} rows, the committed CSV has {len(want)}']
    found = []
    for i, (g, w) in enumerate(zip(got, want), start=2):  # line numbers, after the header
        if g.keys() != w.keys():
            found.append(f'line {i}: columns {list(g)} instead of {list(w)}')
            continue
        for key in w:
            if key in NUMBERS:
                if not abs(float(g[key]) - float(w[key])) <= tolerance:
                    found.append(f'line {i} ({w["unit"]} at {w["scale"]}x): {key} {g[key]}, committed {w[key]}')
            elif g[key] != w[key]:
                found.append(f'line {i}: {key} {g[key]!r}, committed {w[key]!r}')
    return found


@pytest.fixture
def one_thread():
    """One compute thread while the command runs: the tiny model's small convolutions make two threads wait on each
    other on a busy two-core machine (5 to 10 s instead of about 1 s). The numbers are the same."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _command_into(out_dir: Path) -> List[str]:
    args = shlex.split(COMMAND)[1:]  # the arguments of timm-sknet
    args[args.index('--out') + 1] = str(out_dir)
    return args


def test_the_page_names_the_command_and_shows_its_plot_and_data():
    text = PAGE.read_text(encoding='utf-8')
    assert COMMAND in text, f'docs/attention.md must show the command that draws its plot: {COMMAND}'
    assert '](img/attention.png)' in text and '](img/attention.csv)' in text
    assert COMMITTED_PNG.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_the_committed_csv_is_what_the_command_gives_now(tmp_path, capsys, one_thread):
    assert main(_command_into(tmp_path)) == 0
    problems = differences(_read(tmp_path / 'attention.csv'), _read(COMMITTED_CSV), TOLERANCE)
    assert not problems, (f'docs/img/attention.csv is stale. From the repository root run: {COMMAND}\n'
                          + '\n'.join(problems[:20]))


def test_the_comparison_catches_a_changed_value_row_or_unit():
    rows = _read(COMMITTED_CSV)
    assert rows and differences(rows, rows, TOLERANCE) == []
    nudged = copy.deepcopy(rows)
    nudged[5]['mean_diff'] = f'{float(nudged[5]["mean_diff"]) + 2 * TOLERANCE:.6f}'
    renamed = copy.deepcopy(rows)
    renamed[0]['unit'] = 'SK_9_9'
    for changed in (nudged, renamed, rows[:-1]):
        assert differences(changed, rows, TOLERANCE)


def test_the_page_states_what_the_committed_data_show():
    """The page's summary of the plot (which units grow, the average by scale) is computed here from the CSV."""
    rows = _read(COMMITTED_CSV)
    by_unit: Dict[str, Dict[float, float]] = {}
    for row in rows:
        by_unit.setdefault(row['unit'], {})[float(row['scale'])] = float(row['mean_diff'])
    scales = sorted(next(iter(by_unit.values())))
    growing = [unit for unit, v in by_unit.items() if v[scales[-1]] > v[scales[0]]]
    means = [sum(v[s] for v in by_unit.values()) / len(by_unit) for s in scales]
    text = ' '.join(PAGE.read_text(encoding='utf-8').split())
    assert f'in {len(growing)} of {len(by_unit)} units ({", ".join(growing)}' in text
    assert ' -> '.join(f'{m:+.3f}' for m in means) in text
