"""``timm-sknet`` end to end: every subcommand once on small models and images the tests make."""
import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import randomize_batchnorm, rel_max_diff, save_safetensors

import timm
from timm.data import create_transform, resolve_data_config

from timm_sknet.analysis.scale import centred_shapes, run_scale_analysis
from timm_sknet.cli import main

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 7


@pytest.fixture(scope='module')
def trained():
    torch.manual_seed(3)
    return randomize_batchnorm(timm.create_model('sknet18', num_classes=NUM_CLASSES)).eval()


@pytest.fixture(scope='module')
def checkpoint(trained, tmp_path_factory):
    return save_safetensors(trained, tmp_path_factory.mktemp('ckpt') / 'sknet18_7.safetensors')


@pytest.fixture(scope='module')
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp('img') / 'object.png'
    centred_shapes(1, image_size=96, seed=5)[0].save(path)
    return path


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_predict_with_checkpoint_prints_the_models_top_k(capsys, trained, checkpoint, image_path):
    rc, out, err = run_cli(capsys, 'predict', image_path, '--model', 'sknet18', '--checkpoint', checkpoint,
                           '--img-size', 64, '--topk', 3)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f'{image_path}:'
    ranked = [line for line in lines[1:] if line.strip()]
    assert len(ranked) == 3
    printed = [int(line.rsplit('(', 1)[1].rstrip(')')) for line in ranked]
    # independent reference: the saved model itself, on the same preprocessing
    from PIL import Image
    transform = create_transform(**resolve_data_config({'img_size': 64}, model=trained))
    with torch.no_grad():
        probs = trained(transform(Image.open(image_path).convert('RGB'))[None]).softmax(-1)[0]
    assert printed == probs.topk(3).indices.tolist()
    assert f'{probs.max().item() * 100:6.2f}%' in ranked[0]
    assert 'class ' in ranked[0]  # 7 classes, no label names: indices


def test_predict_uses_imagenet_names_for_a_1000_class_head(capsys, image_path):
    rc, out, err = run_cli(capsys, 'predict', image_path, image_path, '--model', 'sknet18', '--img-size', 64,
                           '--topk', 2, '--random-weights')
    assert rc == 0, err
    assert 'random weights, as --random-weights asked' in err
    lines = out.splitlines()
    assert len(lines) == 6 and lines[0] == lines[3] == f'{image_path}:'
    from timm.data import ImageNetInfo
    index = int(lines[1].rsplit('(', 1)[1].rstrip(')'))
    assert ImageNetInfo().index_to_description(index) in lines[1]


def test_predict_prints_the_label_names_of_the_models_config(capsys):
    """sknet_tiny.synthetic's pretrained cfg names its 6 classes: predict prints those names, not indices."""
    from timm_sknet.data.images import SAMPLES_DIR
    from timm_sknet.hub.embedded import EMBEDDED_CLASSES
    images = sorted(SAMPLES_DIR.glob('*.png'))[:2]  # <index>_<class>_s<scale>.png, recognised by the model
    rc, out, err = run_cli(capsys, 'predict', *images, '--model', 'sknet_tiny.synthetic', '--pretrained', '--topk', 2)
    assert rc == 0, err
    ranked = [line.split() for line in out.splitlines() if line.startswith('  ')]
    assert len(ranked) == 4
    for words in ranked:
        assert words[2] == EMBEDDED_CLASSES[int(words[3].strip('()'))]  # the name of the printed index
    assert [words[2] for words in ranked[::2]] == [p.stem.split('_')[1] for p in images]  # and the right one


def test_export_onnx_and_torchscript_fused(capsys, tmp_path, trained, checkpoint):
    import onnxruntime as ort
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = trained(x)
    (tmp_path / 'm.pt').write_text('an earlier export')  # replaced only because --force asks
    for fmt, name, force in (('onnx', 'm.onnx', []), ('torchscript', 'm.pt', ['--force'])):
        rc, out, err = run_cli(capsys, 'export', fmt, tmp_path / name, '--model', 'sknet18', '--fused',
                               '--checkpoint', checkpoint, '--img-size', 64, *force)
        assert rc == 0, err
        assert 'fused' in out
    session = ort.InferenceSession(str(tmp_path / 'm.onnx'), providers=['CPUExecutionProvider'])
    onnx_out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    assert rel_max_diff(onnx_out, ref) < 1e-4
    scripted = torch.jit.load(str(tmp_path / 'm.pt'))
    with torch.no_grad():
        assert rel_max_diff(scripted(x), ref) < 1e-4
    # the fused TorchScript is the fused graph, not the plain one
    paths = [m.original_name for n, m in scripted.named_modules() if n.startswith('layer1.0.conv1.paths.')]
    assert 'Conv2d' in paths and not any('BatchNorm' in name for name in paths), paths


def test_convert_writes_a_folder_timm_loads(capsys, tmp_path, trained, checkpoint):
    out_dir = tmp_path / 'hub'
    rc, out, err = run_cli(capsys, 'convert', out_dir, '--model', 'sknet18', '--checkpoint', checkpoint)
    assert rc == 0, err
    assert {p.name for p in out_dir.iterdir()} == {'config.json', 'model.safetensors', 'README.md'}
    loaded = timm.create_model(f'local-dir:{out_dir}', pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), trained(x))
    # a second convert into the same folder refuses, with the flag to use
    rc, out, err = run_cli(capsys, 'convert', out_dir, '--model', 'sknet18', '--checkpoint', checkpoint)
    assert rc == 2 and '--overwrite' in err


def test_attention_synthetic_writes_csv_and_png(capsys, tmp_path, trained, checkpoint):
    rc, out, err = run_cli(capsys, 'attention', '--synthetic', 2, '--model', 'sknet18', '--checkpoint', checkpoint,
                           '--img-size', 64, '--scales', 1, 1.5, 2, '--out', tmp_path)
    assert rc == 0, err
    with open(tmp_path / 'attention.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    units = 8  # sknet18: 2 basic blocks in each of 4 stages, one SK unit each
    assert len(rows) == units * 3
    assert sorted({float(r['scale']) for r in rows}) == [1.0, 1.5, 2.0]
    assert all(int(r['n_images']) == 2 for r in rows)
    # the CSV holds what the analysis computes for the checkpoint's model on those images (the analysis' own
    # numbers are checked by hand in test_main_job.py and test_scale_analysis.py): the command passes them on
    expected = run_scale_analysis(trained, centred_shapes(2, image_size=64), [1, 1.5, 2],
                                  data_config=resolve_data_config({'img_size': 64}, model=trained)).mean_diffs()
    for row in rows:
        index = [1.0, 1.5, 2.0].index(float(row['scale']))
        assert float(row['mean_diff']) == pytest.approx(expected[row['unit']][index], abs=2e-6), row
    assert (tmp_path / 'attention.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert out.splitlines()[0].split() == ['unit', '1x', '1.5x', '2x']
    assert 'SK_2_1' in out


def test_bench_quick_writes_json_and_markdown(capsys, tmp_path):
    rc, out, err = run_cli(capsys, 'bench', '--quick', '--batch-sizes', 1, '--out', tmp_path / 'bench')
    assert rc == 0, err
    result = json.loads((tmp_path / 'bench.json').read_text())
    assert result['title'].startswith('Inference: sknet18 vs timm skresnet18') and '64 px' in result['title']
    rows = result['tables']['paths']
    assert {r['path'] for r in rows} == {f'{o} {b} fp32' for o in ('sknet', 'timm') for b in ('eager', 'onnxruntime')}
    assert all(r['images_per_s'] > 0 and r['error'] <= 1e-4 and r['batch'] == 1 for r in rows)
    best = {s['precision']: s for s in result['tables']['summary']}['fp32']
    assert best['ours_images_per_s'] == max(r['images_per_s'] for r in rows if r['path'].startswith('sknet'))
    assert best['peer_images_per_s'] == max(r['images_per_s'] for r in rows if r['path'].startswith('timm'))
    assert (tmp_path / 'bench.md').read_text().strip() in out
    assert result['machine']['peak_gflops']['fp32'] > 0 and result['machine']['cpu_flags'] is not None


@pytest.mark.parametrize('what, table, column', [('eager', 'cases', 'ratio'), ('backbone', 'inference', 'folded_x')])
def test_bench_eager_and_backbone_runners_compare_with_timm(capsys, tmp_path, what, table, column):
    rc, out, err = run_cli(capsys, 'bench', what, '--quick', '--image-size', 32, '--no-memory',
                           '--out', tmp_path / 'bench')
    assert rc == 0, err
    result = json.loads((tmp_path / 'bench.json').read_text())
    assert 'sknet18 vs timm skresnet18' in result['title'] and '32 px' in result['title']
    rows = result['tables'][table]
    assert rows and all(r[column] > 0 for r in rows)
    assert (tmp_path / 'bench.md').read_text().strip() in out


@pytest.mark.skipif(importlib.util.find_spec('openvino') is None, reason='openvino not installed')
def test_predict_on_openvino_int8_gives_the_plain_models_classes(capsys):
    """The embedded model on its own sample images: int8 (calibrated on the synthetic shapes) agrees with fp32."""
    from timm_sknet.data.images import SAMPLES_DIR
    images = sorted(SAMPLES_DIR.glob('*.png'))[:6]
    answers = {}
    for backend, precision in (('eager', 'fp32'), ('openvino', 'int8')):
        rc, out, err = run_cli(capsys, 'predict', *images, '--model', 'sknet_tiny.synthetic', '--pretrained',
                               '--topk', 1, '--backend', backend, '--precision', precision, '--calibration-images', 128)
        assert rc == 0, err
        assert f'{backend} at {precision}' in err
        answers[backend] = [line.split()[2] for line in out.splitlines() if line.startswith('  1.')]
    truth = [p.stem.split('_')[1] for p in images]
    assert answers['eager'] == truth  # class names, not indices
    assert answers['openvino'] == answers['eager']


@pytest.mark.skipif(importlib.util.find_spec('openvino') is None, reason='openvino not installed')
@pytest.mark.parametrize('precision', ['fp32', 'int8'])
def test_export_openvino_ir_loads_in_openvino_and_matches(capsys, tmp_path, trained, checkpoint, precision):
    import openvino as ov

    from timm_sknet.inference.openvino_ir import compile_config
    out_dir = tmp_path / 'ir'
    rc, out, err = run_cli(capsys, 'export', 'openvino', out_dir, '--model', 'sknet18', '--checkpoint', checkpoint,
                           '--img-size', 64, '--precision', precision, '--calibration-images', 64)
    assert rc == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ['model.bin', 'model.xml']
    compiled = ov.Core().compile_model(str(out_dir / 'model.xml'), 'CPU', compile_config(precision))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = trained(x)
    got = torch.from_numpy(compiled(x.numpy())[0])
    assert rel_max_diff(got, ref) < {'fp32': 1e-4, 'int8': 0.25}[precision]
    ops = {op.get_type_name() for op in ov.Core().read_model(str(out_dir / 'model.xml')).get_ops()}
    assert ('FakeQuantize' in ops) == (precision == 'int8'), ops  # the int8 IR is the quantized graph


def test_runtime_options_refuse_what_cannot_run(capsys, tmp_path, checkpoint, image_path):
    rc, _, err = run_cli(capsys, 'export', 'onnx', tmp_path / 'm.onnx', '--model', 'sknet18', '--checkpoint',
                         checkpoint, '--precision', 'int8')
    assert rc == 2 and 'OpenVINO setting' in err
    rc, _, err = run_cli(capsys, 'predict', image_path, '--model', 'sknet18', '--checkpoint', checkpoint,
                         '--backend', 'onnxruntime', '--precision', 'int8')
    assert rc == 2 and "backend='openvino'" in err and 'Traceback' not in err


def test_list_and_main_job_still_work(capsys, tmp_path):
    rc, out, _ = run_cli(capsys, 'list')
    assert rc == 0 and '| sknet18 |' in out
    rc, out, _ = run_cli(capsys, '--out', str(tmp_path))  # the main job, offline, on the embedded model
    assert rc == 0 and '| sknet50 |' in out and '12/12 correct' in out and 'paper' in out
    assert (tmp_path / 'predictions.csv').exists() and (tmp_path / 'attention_vs_scale.csv').exists()


@pytest.mark.parametrize('argv, message', [
    (['predict', '{missing}'], 'image file not found'),
    (['predict', '{image}', '--model', 'sknet7'], 'unknown model'),
    (['predict', '{image}', '--model', 'sknet18', '--checkpoint', '{missing}'], 'checkpoint file not found'),
    (['predict', '{image}', '--model', 'sknet34', '--checkpoint', '{ckpt}'], 'does not fit sknet34'),
    (['predict', '{image}', '--model', 'sknet101'], 'sknet101 has no published weights: pass --checkpoint FILE'),
    (['predict', '{image}', '--model', 'sknet18', '--checkpoint', '{ckpt}', '--random-weights'], 'exclude each other'),
    (['attention', '--model', 'sknet18', '--out', '{tmp}'], '--synthetic N'),
    (['convert', '{tmp}/hub', '--model', 'sknet18'], '--checkpoint FILE or --pretrained'),
])
def test_user_errors_are_one_line_with_exit_2(capsys, tmp_path, image_path, checkpoint, argv, message):
    bad = tmp_path / 'bad.png'
    bad.write_text('not an image')
    fill = dict(missing=tmp_path / 'missing.png', bad=bad, image=image_path, ckpt=checkpoint, tmp=tmp_path)
    rc, out, err = run_cli(capsys, *(a.format(**fill) for a in argv))
    assert rc == 2
    assert err.startswith('timm-sknet: error: ') and message in err
    assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err


def test_console_entry_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'timm_sknet', 'predict', str(tmp_path / 'nope.jpg')],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f'timm-sknet: error: image file not found: {tmp_path / "nope.jpg"} '
                                   '(check the path; globs are expanded by your shell)')


def test_train_subcommand_end_to_end(tmp_path, capsys):
    """`timm-sknet train` is wired to timm_sknet.train: one tiny epoch writes a loadable Hub folder."""
    from timm_sknet.cli import main
    out = tmp_path / 'run'
    code = main(['train', '--model', 'sknet18', '--model-kwargs', 'layers=(1,1,1,1)',
                 '--synthetic-train-size', '16', '--synthetic-val-size', '8', '--synthetic-classes', '4',
                 '--img-size', '16', '--batch-size', '8', '--epochs', '1', '--workers', '0',
                 '--output', str(out)])
    assert code == 0
    assert 'epoch' in capsys.readouterr().out
    model = timm.create_model(f'local-dir:{out / "model"}', pretrained=True)
    assert model.num_classes == 4


def test_train_subcommand_bad_option_is_one_line(tmp_path, capsys):
    from timm_sknet.cli import main
    code = main(['train', '--synthetic-train-size', '16', '--batch-size', '64', '--output', str(tmp_path / 'r')])
    err = capsys.readouterr().err
    assert code == 2 and 'lower --batch-size' in err and 'Traceback' not in err
    assert not (tmp_path / 'r' / 'model').exists()
