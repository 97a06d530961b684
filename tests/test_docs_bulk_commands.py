"""Every ``timm-sknet`` command on docs/bulk-inference.md runs as written, in order, in a folder holding what the
commands name (``photos/`` with JPEGs and PNGs in a subfolder, ``cat.jpg``, ``dog.jpg``).

One change: a command whose model has no offline weights (the default sknet50's come from the Hub, and the tests
run offline) gets ``--model sknet_tiny.synthetic``, the model embedded in the package. The commands run in this
process through ``timm_sknet.cli.main`` after ``shlex.split`` (the shell's quoting); the producer of a pipeline
(``find ... |``) runs as a real process and its output is the command's stdin."""
import csv
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from timm.models import get_pretrained_cfg

from timm_sknet.cli import main
from timm_sknet.data.images import SAMPLES_DIR

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / 'docs' / 'bulk-inference.md'
STAND_IN = 'sknet_tiny.synthetic'


def page_commands():
    blocks = re.findall(r'```bash\n(.*?)```', PAGE.read_text(encoding='utf-8'), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if 'timm-sknet ' in line]


def offline(argv):
    """The command's model (--model, else predict's default) loads with no network: its weights are a file."""
    model = argv[argv.index('--model') + 1] if '--model' in argv else 'sknet50'
    return bool(get_pretrained_cfg(model).file)


def run(line, capsys, monkeypatch):
    producer, _, command = line.rpartition('|')
    argv = shlex.split(command, comments=True)
    assert argv[0] == 'timm-sknet', line
    argv = argv[1:]
    if not offline(argv):
        argv = [a for i, a in enumerate(argv) if '--model' not in (a, argv[i - 1] if i else '')]
        argv += ['--model', STAND_IN]
    if producer:
        listed = subprocess.run(shlex.split(producer), capture_output=True, text=True, check=True).stdout
        monkeypatch.setattr(sys, 'stdin', io.StringIO(listed))
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, f'{line}\n{err}'
    return out, err


def rows(path):
    if path.suffix == '.csv':
        with open(path, newline='') as f:
            return list(csv.DictReader(f))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_command_on_the_bulk_inference_page_runs_as_written(tmp_path, capsys, monkeypatch):
    samples = sorted(SAMPLES_DIR.glob('*.png'))
    (tmp_path / 'photos' / 'day2').mkdir(parents=True)
    for i, sample in enumerate(samples[:6]):
        folder = tmp_path / 'photos' / ('day2' if i % 2 else '.')
        image = Image.open(sample).convert('RGB')
        image.save(folder / f'{sample.stem}.{"jpg" if i < 3 else "png"}')  # 3 JPEGs, 3 PNGs
    for name, sample in (('cat.jpg', samples[6]), ('dog.jpg', samples[7])):
        Image.open(sample).convert('RGB').save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    commands = page_commands()
    assert len(commands) >= 5 and any('--resume' in c for c in commands) and any('|' in c for c in commands)
    printed = [run(line, capsys, monkeypatch)[0] for line in commands]
    assert len(rows(tmp_path / 'preds.csv')) == 6
    assert len(rows(tmp_path / 'preds.jsonl')) == 3 and np.load(tmp_path / 'emb.npy').shape == (3, 128)
    assert len(rows(tmp_path / 'listed.csv')) == 3
    assert 'cat.jpg:' in printed[-1] and 'dog.jpg:' in printed[-1]
