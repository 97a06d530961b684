"""``timm-sknet predict`` in bulk: folders, globs and file lists; CSV/JSONL rows and embeddings checked against
the model called directly; bad images skipped and named; exit statuses; a SIGKILLed run resumed equals an
uninterrupted one. The embedded ``sknet_tiny.synthetic`` (64 px, offline) on its sample images."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from loopback_guard.sitecustomize import child_environment
from PIL import Image

import timm
from timm.data import create_transform, resolve_data_config

from timm_sknet.batch.finding import find_images
from timm_sknet.batch.predictor import decode
from timm_sknet.cli import main
from timm_sknet.data.images import SAMPLES_DIR
from timm_sknet.hub.embedded import WEIGHTS_SHA256

ROOT = Path(__file__).resolve().parents[1]
MODEL = ['--model', 'sknet_tiny.synthetic', '--pretrained']
SAMPLES = sorted(SAMPLES_DIR.glob('*.png'))


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope='module')
def reference():
    """probabilities and pre_logits of images, by timm directly: create_model + the eval transform, by hand."""
    model = timm.create_model('sknet_tiny.synthetic', pretrained=True).eval()
    features = timm.create_model('sknet_tiny.synthetic', pretrained=True, num_classes=0).eval()  # fc removed
    transform = create_transform(**resolve_data_config({}, model=model))
    labels = model.pretrained_cfg['label_names']

    def predict(paths):
        x = torch.stack([transform(Image.open(p).convert('RGB')) for p in paths])
        with torch.no_grad():
            return model(x).softmax(-1), features(x)
    predict.labels = labels
    return predict


@pytest.fixture
def folder(tmp_path):
    """Samples in a folder and a subfolder, with a truncated PNG, a text file named .jpg and a non-image file."""
    root = tmp_path / 'images'
    (root / 'sub').mkdir(parents=True)
    for i, sample in enumerate(SAMPLES[:6]):
        shutil.copy(sample, root / ('sub' if i % 2 else '.') / sample.name)
    (root / 'sub' / 'truncated.png').write_bytes(SAMPLES[0].read_bytes()[:200])
    (root / 'not_an_image.jpg').write_text('hello')
    (root / 'notes.txt').write_text('not searched: not an image extension')
    return root


def read_rows(path: Path):
    if path.suffix == '.csv':
        with open(path, newline='', encoding='utf-8') as f:
            return list(csv.DictReader(f))
    return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines()]


def check_rows(rows, reference, topk, embeddings=None):
    """Every row (labels, indices, probabilities) and embedding as timm gives them for that row's image."""
    probs, features = reference([row['path'] for row in rows])
    top = probs.topk(topk)
    for row, values, indices in zip(rows, top.values.tolist(), top.indices.tolist()):
        assert [int(row[f'index_{r}']) for r in range(1, topk + 1)] == indices, row['path']
        assert [row[f'label_{r}'] for r in range(1, topk + 1)] == [reference.labels[i] for i in indices]
        assert [row[f'wnid_{r}'] for r in range(1, topk + 1)] == [''] * topk  # 6 shapes: no WordNet ids
        np.testing.assert_allclose([float(row[f'probability_{r}']) for r in range(1, topk + 1)], values, rtol=1e-4)
    if embeddings is not None:
        assert embeddings.shape == tuple(features.shape)
        np.testing.assert_allclose(embeddings, features.numpy(), rtol=1e-4, atol=1e-5)


def test_a_folder_with_corrupt_images_gives_a_row_for_every_good_one_and_names_the_bad(capsys, tmp_path, folder,
                                                                                       reference):
    out = tmp_path / 'preds.csv'
    rc, stdout, err = run_cli(capsys, 'predict', folder, *MODEL, '--topk', 3, '--batch-size', 2, '--workers', 1,
                              '--output', out, '--embeddings', tmp_path / 'emb.npy')
    assert rc == 1, err  # some images failed, the others were predicted
    rows = read_rows(out)
    good = sorted(p for p in folder.rglob('*.png') if p.name != 'truncated.png')
    assert sorted(row['path'] for row in rows) == sorted(map(str, good))  # every good image, recursively, once
    check_rows(rows, reference, 3, np.load(tmp_path / 'emb.npy'))
    failures = {row['path']: row['error'] for row in read_rows(tmp_path / 'preds.errors.csv')}
    assert set(failures) == {str(folder / 'sub' / 'truncated.png'), str(folder / 'not_an_image.jpg')}
    assert 'truncated' in failures[str(folder / 'sub' / 'truncated.png')]
    assert 'not an image' in failures[str(folder / 'not_an_image.jpg')]
    for path in failures:
        assert f'skipped: {path}' in err
    assert 'notes.txt' not in out.read_text() + err
    assert stdout == ''


def test_globs_and_file_lists_write_jsonl_and_safetensors(capsys, tmp_path, folder, reference):
    from safetensors import safe_open
    listed = tmp_path / 'list.txt'
    listed.write_text(f'{SAMPLES[7]}\n\n{SAMPLES[8]}\n')
    out, emb = tmp_path / 'preds.jsonl', tmp_path / 'emb.safetensors'
    rc, _, err = run_cli(capsys, 'predict', f'{folder}/**/0[0-3]*.png', '--file-list', listed, *MODEL, '--topk', 2,
                         '--workers', 0, '--output', out, '--embeddings', emb)
    assert rc == 0, err
    rows = read_rows(out)
    assert [row['path'] for row in rows] == [*map(str, sorted(folder.rglob('0[0-3]*.png'))), str(SAMPLES[7]),
                                             str(SAMPLES[8])]
    with safe_open(str(emb), framework='numpy') as f:  # written by hand: read back by the safetensors library
        assert f.metadata() == {'rows_of': 'preds.jsonl'}
        check_rows(rows, reference, 2, f.get_tensor('embeddings'))
    assert not (tmp_path / 'preds.errors.csv').exists() and not (tmp_path / 'emb.safetensors.partial').exists()


def test_printed_rows_as_before_and_a_bad_file_named_with_exit_1(capsys, tmp_path, reference):
    bad = tmp_path / 'bad.png'
    bad.write_text('not an image')
    rc, out, err = run_cli(capsys, 'predict', SAMPLES[0], bad, SAMPLES[1], *MODEL, '--topk', 1)
    assert rc == 1
    assert f'skipped: {bad} is not an image' in err
    lines = out.splitlines()
    assert lines[0::2] == [f'{SAMPLES[0]}:', f'{SAMPLES[1]}:']
    probs, _ = reference(SAMPLES[:2])
    assert [line.split()[2] for line in lines[1::2]] == [reference.labels[i] for i in probs.argmax(-1).tolist()]


@pytest.mark.parametrize('argv, message', [
    (['{image}', '--output', '{tmp}/done.csv'], 'pass --resume'),
    (['{image}', '--embeddings', '{tmp}/e.npy'], 'need --output'),
    (['{image}', '--resume'], 'need --output'),
    (['{image}', '--output', '{tmp}/preds.txt'], '.csv, .jsonl'),
    (['{image}', '--output', '{tmp}/p.csv', '--embeddings', '{tmp}/e.pt'], '.npy, .safetensors'),
    (['{tmp}/*.jpeg'], "no file matches '"),
    (['{tmp}/empty'], 'no images'),
    (['{tmp}/missing.png'], 'image file not found'),
    (['--file-list', '{tmp}/missing.txt'], 'missing.txt'),
    ([], '--file-list FILE'),
])
def test_usage_errors_exit_2_before_anything_is_written(capsys, tmp_path, argv, message):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'done.csv').write_text('path\n')
    before = sorted(tmp_path.rglob('*'))
    rc, out, err = run_cli(capsys, 'predict', *(a.format(image=SAMPLES[0], tmp=tmp_path) for a in argv), *MODEL)
    assert rc == 2 and err.startswith('timm-sknet: error: ') and message in err, err
    assert sorted(tmp_path.rglob('*')) == before


def test_resume_refuses_other_options_naming_each(capsys, tmp_path):
    out = tmp_path / 'p.csv'
    assert run_cli(capsys, 'predict', SAMPLES[0], *MODEL, '--topk', 2, '--output', out)[0] == 0
    manifest = json.loads((tmp_path / 'p.csv.manifest.json').read_text())
    assert manifest['weights'] == {'pretrained': 'sknet_tiny.synthetic', 'sha256': WEIGHTS_SHA256}
    assert manifest['topk'] == 2 and manifest['embeddings'] is None and manifest['input_size'] == [3, 64, 64]
    rc, _, err = run_cli(capsys, 'predict', SAMPLES[1], *MODEL, '--topk', 3, '--output', out, '--resume',
                         '--embeddings', tmp_path / 'e.npy', '--img-size', 72)
    assert rc == 2 and 'topk 2 -> 3' in err and 'input_size [3, 64, 64] -> [3, 72, 72]' in err, err
    assert f'embeddings null -> "{tmp_path / "e.npy"}"' in err and 'the options of the first run' in err
    rc, _, err = run_cli(capsys, 'predict', SAMPLES[1], '--model', 'sknet_tiny.synthetic', '--random-weights',
                         '--topk', 2, '--output', out, '--resume')
    assert rc == 2 and 'weights {"pretrained": "sknet_tiny.synthetic"' in err and '-> {"random": "' in err, err
    assert 'random weights, as --random-weights asked' in err
    assert len(read_rows(out)) == 1 and not (tmp_path / 'e.npy.partial').exists()
    # an embeddings run resumed without them: refused too (its rows and embeddings would no longer align)
    out = tmp_path / 'q.jsonl'
    assert run_cli(capsys, 'predict', SAMPLES[0], *MODEL, '--output', out, '--embeddings', tmp_path / 'f.npy')[0] == 0
    rc, _, err = run_cli(capsys, 'predict', SAMPLES[1], *MODEL, '--output', out, '--resume')
    assert rc == 2 and f'embeddings "{tmp_path / "f.npy"}" -> null' in err, err
    # an output no manifest vouches for is not resumed
    (tmp_path / 'q.jsonl.manifest.json').unlink()
    rc, _, err = run_cli(capsys, 'predict', SAMPLES[1], *MODEL, '--output', out, '--resume',
                         '--embeddings', tmp_path / 'f.npy')
    assert rc == 2 and 'has no q.jsonl.manifest.json' in err, err


def test_a_killed_run_resumed_equals_an_uninterrupted_one(capsys, tmp_path):
    """SIGKILL mid-run: the 7th listed image is a FIFO, so the run blocks there after six rows, deterministically.
    A torn write (half a row, a partial embedding) is then added by hand; ``--resume`` drops it, predicts the rest
    once, and the result equals a run that was never interrupted."""
    images = [tmp_path / f'{i:02d}.png' for i in range(11)]
    for i, path in enumerate(images):
        shutil.copy(SAMPLES[i % len(SAMPLES)], path)
    images[8] = images[1]  # listed twice, before the kill and after it: predicted twice
    blocker = images[6]
    blocker.unlink()
    os.mkfifo(blocker)
    listed = tmp_path / 'list.txt'
    listed.write_text(''.join(f'{p}\n' for p in images))
    args = ['predict', '--file-list', listed, *MODEL, '--topk', 2, '--batch-size', 2, '--workers', 0]
    out, emb = tmp_path / 'out.jsonl', tmp_path / 'emb.npy'
    proc = subprocess.Popen([sys.executable, '-m', 'timm_sknet', *map(str, args), '--output', out, '--embeddings', emb],
                            cwd=ROOT, env=child_environment(dict(os.environ)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_bytes().count(b'\n') == 6):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, 'the run never reached the FIFO'
            time.sleep(0.05)
        time.sleep(0.2)  # it is blocked on the FIFO now; nothing more can come
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stderr.close()
    assert len(read_rows(out)) == 6 and (tmp_path / 'emb.npy.partial').stat().st_size == 6 * 128 * 4
    assert not emb.exists()
    with open(out, 'a') as f:  # a row cut off mid-write ...
        f.write('{"path": "' + str(images[6]) + '", "label_1": "di')
    with open(tmp_path / 'emb.npy.partial', 'ab') as f:  # ... and the embeddings of a batch whose rows never came
        f.write(np.ones((2, 128), np.float32).tobytes())
    blocker.unlink()
    shutil.copy(SAMPLES[6], blocker)

    rc, _, err = run_cli(capsys, *args, '--output', out, '--embeddings', emb, '--resume')
    assert rc == 0, err
    assert 'resuming: 6 of 11 images done' in err
    rc, _, err = run_cli(capsys, *args, '--output', tmp_path / 'whole.jsonl', '--embeddings', tmp_path / 'whole.npy')
    assert rc == 0, err
    resumed, whole = read_rows(out), read_rows(tmp_path / 'whole.jsonl')
    assert [r['path'] for r in resumed] == [r['path'] for r in whole] == list(map(str, images))  # none lost or doubled
    for a, b in zip(resumed, whole):
        assert {k: v for k, v in a.items() if 'prob' not in k} == {k: v for k, v in b.items() if 'prob' not in k}
        assert a['probability_1'] == pytest.approx(b['probability_1'], rel=1e-5)
    np.testing.assert_allclose(np.load(emb), np.load(tmp_path / 'whole.npy'), rtol=1e-5, atol=1e-6)
    assert not (tmp_path / 'emb.npy.partial').exists()
    # resuming a finished run does nothing, and keeps the embeddings
    rc, _, err = run_cli(capsys, *args, '--output', out, '--embeddings', emb, '--resume')
    assert rc == 0 and len(read_rows(out)) == 11 and np.load(emb).shape == (11, 128)


def test_decode_and_find_images_report_instead_of_raising(tmp_path, folder):
    image, reason = decode(tmp_path / 'missing.png', transform=lambda im: im)
    assert image is None and 'not found' in reason and str(tmp_path / 'missing.png') in reason
    image, reason = decode(SAMPLES[0], transform=lambda im: 1 / 0)  # any failure of one file is that file's
    assert image is None and reason == f'{SAMPLES[0]}: division by zero'
    assert find_images([folder / 'sub']) == sorted(p for p in (folder / 'sub').iterdir() if p.suffix == '.png')
