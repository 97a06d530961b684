"""What ``timm-sknet predict`` reads and refuses before it builds a model, and what a resume holds: symlinked
folders followed once (loops ended), WordNet ids beside ImageNet labels, usage mistakes caught with no model built,
and the rows already done held as path hashes, under 200 bytes a row."""
import csv
import json
import os
import shutil
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest

import timm
from timm.data import ImageNetInfo

from timm_sknet.batch.finding import find_images
from timm_sknet.batch.output import PredictionFiles, path_key
from timm_sknet.cli import main
from timm_sknet.data.images import SAMPLES_DIR
from timm_sknet.data.labels import class_names, wordnet_ids

SAMPLES = sorted(SAMPLES_DIR.glob('*.png'))


def copies(folder: Path, count: int, start: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(SAMPLES[i], folder / f'{i:02d}.png')) for i in range(start, start + count)]


def test_a_symlinked_subfolder_is_followed_and_each_real_file_found_once(tmp_path):
    """The issue's folder: 3 images of its own and 4 behind a symlinked subfolder (1 of 7 were found)."""
    photos = tmp_path / 'photos'
    own, elsewhere = copies(photos / 'day1', 3), copies(tmp_path / 'archive' / 'day2', 4, start=3)
    (photos / 'day2').symlink_to(tmp_path / 'archive' / 'day2', target_is_directory=True)
    (photos / 'also_day2').symlink_to(tmp_path / 'archive' / 'day2', target_is_directory=True)  # twice: once
    (photos / 'favourite.png').symlink_to(own[0])  # a symlink to a file: its target is found already
    found = find_images([photos])
    assert sorted(os.path.realpath(p) for p in found) == sorted(map(str, own + elsewhere))
    assert len(found) == 7
    assert found == sorted(found) and all(str(p).startswith(str(photos)) for p in found)  # paths as reached
    # a glob by the same rule; a file named twice on the command line is predicted twice, as listed
    assert find_images([f'{photos}/**/*.png']) == found
    assert find_images([own[1], own[1]]) == [own[1], own[1]]


def test_a_symlink_loop_ends_and_a_quoted_glob_finds_each_image_once(tmp_path, monkeypatch):
    photos = tmp_path / 'photos'
    images = copies(photos, 2) + copies(photos / 'sub', 2, start=2)
    (photos / 'sub' / 'up').symlink_to(photos, target_is_directory=True)  # photos/sub/up/sub/up/... a loop
    (photos / 'sub' / 'self').symlink_to(photos / 'sub', target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for query in (['photos'], ['photos/**/*.png'], ['photos/**'], ['**/*.png'], ['photos/*/*.png', 'photos/*.png']):
        found = find_images(query)
        assert sorted(os.path.realpath(p) for p in found) == sorted(map(str, images)), query
    assert find_images(['photos/*/*.png']) == [Path('photos/sub/02.png'), Path('photos/sub/03.png')]  # depth kept


def test_rows_carry_the_wordnet_id_that_tells_two_cranes_apart(capsys, tmp_path):
    head = SimpleNamespace(num_classes=1000, pretrained_cfg={})  # what the two read of a model
    names, wnids = class_names(head), wordnet_ids(head) or [''] * len(class_names(head))
    assert names[134] == names[517] == 'crane' and wnids[134] != wnids[517]  # the bird, the machine
    out = tmp_path / 'p.csv'
    rc = main(['predict', *map(str, SAMPLES[:2]), '--model', 'sknet18', '--random-weights', '--img-size', '32',
               '--topk', '3', '--output', str(out)])
    assert rc == 0, capsys.readouterr().err
    info = ImageNetInfo()
    with open(out, newline='') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[1:5] == ['index_1', 'wnid_1', 'label_1', 'probability_1']
    for row in rows:
        for rank in (1, 2, 3):
            index = int(row[f'index_{rank}'])
            assert row[f'wnid_{rank}'] == info.index_to_label_name(index)
            assert row[f'label_{rank}'] == info.index_to_description(index)
    manifest = json.loads((tmp_path / 'p.csv.manifest.json').read_text())
    assert list(manifest['weights']) == ['random']  # the output says so, as stderr does


@pytest.fixture
def no_model(monkeypatch):
    """A model build fails the test: the refusals below must come before it."""
    def build(*args, **kwargs):
        raise AssertionError('a model was built')
    monkeypatch.setattr(timm, 'create_model', build)


@pytest.mark.parametrize('argv, message', [
    (['predict', '{image}', '--output', '{tmp}/missing/p.csv'], 'the folder {tmp}/missing does not exist'),
    (['predict', '{image}', '--output', '{tmp}/p.csv', '--embeddings', '{tmp}/missing/e.npy'], 'mkdir -p'),
    (['predict', '{image}', '--output', '{tmp}/done.csv'], 'pass --resume'),
    (['predict', '{image}', '--output', '{tmp}/other.csv'], 'other.csv.manifest.json exist'),
    (['predict', '{image}', '--model', 'sknet101'], '--random-weights'),
    (['serve', '--model', 'sknet101'], 'sknet101 has no published weights'),
    (['export', 'onnx', '{tmp}/done.csv', '--model', 'sknet50', '--pretrained'], 'pass --force'),
])
def test_refused_before_a_model_is_built(capsys, tmp_path, no_model, argv, message):
    (tmp_path / 'done.csv').write_text('path\n')
    (tmp_path / 'other.csv.manifest.json').write_text('{}')  # a run killed before its first row
    rc = main([a.format(image=SAMPLES[0], tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and message.format(tmp=tmp_path) in err, err


def resume_bytes_per_row(path: Path, columns, rows: int) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        files = PredictionFiles(path, columns)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert files.written == rows and sum(files.done.values()) == rows
    return held / rows


@pytest.mark.parametrize('suffix', ['.csv', '.jsonl'])
def test_resume_holds_the_rows_done_as_path_hashes_under_200_bytes_a_row(tmp_path, suffix):
    columns = ['path', *(f'{what}_{r}' for r in range(1, 6) for what in ('index', 'wnid', 'label', 'probability'))]
    rows = 20_000
    path = tmp_path / f'p{suffix}'
    with open(path, 'w', newline='', encoding='utf-8') as f:
        write = csv.writer(f, lineterminator='\n').writerow if suffix == '.csv' else None
        if write:
            write(columns)
        for i in range(rows):
            values = [f'/data/photos/2024/{i % 97:02d}/IMG_{i:07d}.jpg',
                      *(v for r in range(5) for v in (i % 1000, f'n{i:08d}', 'crane', 0.2 - r / 100))]
            if write:
                write(values)
            else:
                f.write(json.dumps(dict(zip(columns, values))) + '\n')
    per_row = resume_bytes_per_row(path, columns, rows)
    assert per_row < 200, per_row
    files = PredictionFiles(path, columns)
    assert files.done[path_key('/data/photos/2024/05/IMG_0000005.jpg')] == 1
    assert files.done[path_key('/data/photos/2024/05/IMG_0000006.jpg')] == 0
