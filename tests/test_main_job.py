"""The offline main job and the embedded model it runs on."""
import csv
import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_batchnorm
from PIL import Image

import timm

from timm_sknet import SelectiveKernel
from timm_sknet.analysis.scale import DEFAULT_SCALES, run_scale_analysis, zoom_transform
from timm_sknet.cli.main_job import run_main_job
from timm_sknet.data.images import SAMPLES_DIR
from timm_sknet.data.synthetic import CLASSES, SyntheticShapes
from timm_sknet.errors import WeightsError
from timm_sknet.hub.embedded import (
    EMBEDDED_CLASSES,
    EMBEDDED_TAG,
    WEIGHTS_DIR,
    WEIGHTS_FILE,
    WEIGHTS_SHA256,
    verify_embedded_weights,
)
from timm_sknet.training.job import state_digest


def test_embedded_weights_are_small_intact_and_registered():
    assert WEIGHTS_FILE.stat().st_size <= 5 * 1024 * 1024
    assert hashlib.sha256(WEIGHTS_FILE.read_bytes()).hexdigest() == WEIGHTS_SHA256
    assert verify_embedded_weights() == WEIGHTS_FILE
    assert EMBEDDED_TAG in timm.list_pretrained('sknet*')
    # the registered tag and the Hub-format folder it lives in give the same model
    tagged = timm.create_model(EMBEDDED_TAG, pretrained=True)
    folder = timm.create_model(f'local-dir:{WEIGHTS_DIR}', pretrained=True)
    assert state_digest(tagged) == state_digest(folder)
    assert list(tagged.pretrained_cfg['label_names']) == list(EMBEDDED_CLASSES)


def test_embedded_class_names_are_the_synthetic_sets_and_the_folders():
    """The names are written out in hub/embedded.py (no image code at import): they must stay the data set's."""
    config = json.loads((WEIGHTS_DIR / 'config.json').read_text())
    assert list(EMBEDDED_CLASSES) == list(CLASSES[:len(EMBEDDED_CLASSES)]) == config['label_names']


def test_corrupted_embedded_weights_are_refused(tmp_path, monkeypatch):
    bad = tmp_path / 'model.safetensors'
    data = bytearray(WEIGHTS_FILE.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    monkeypatch.setattr('timm_sknet.hub.embedded.WEIGHTS_FILE', bad)
    with pytest.raises(WeightsError, match='sha256'):
        verify_embedded_weights()
    monkeypatch.setattr('timm_sknet.hub.embedded.WEIGHTS_FILE', tmp_path / 'missing.safetensors')
    with pytest.raises(WeightsError, match='incomplete'):
        verify_embedded_weights()


def test_embedded_model_recognises_fresh_synthetic_shapes():
    # images it never saw (another split name), so this measures generalisation, not memory
    model = timm.create_model(EMBEDDED_TAG, pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    ds = SyntheticShapes(96, image_size=64, seed=123, split='test', num_classes=len(EMBEDDED_CLASSES),
                         transform=transform)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.inference_mode():
        acc = (model(x).argmax(1) == torch.tensor(ds.targets)).float().mean().item()
    assert acc >= 0.75, f'embedded model accuracy {acc:.2f} on fresh shapes'


def test_zoom_is_a_centre_crop_and_resize():
    """The analysis' zoom (timm's eval transform with crop_pct / s) against a hand-made PIL crop + resize."""
    ds = SyntheticShapes(1, image_size=64, seed=0, center_jitter=0.0)
    img = ds.image(0)
    config = dict(input_size=(3, 64, 64), crop_pct=1.0, interpolation='bilinear', mean=(0, 0, 0), std=(1, 1, 1))
    as_tensor = timm.data.create_transform(**config, is_training=False)
    assert torch.allclose(zoom_transform(config, 1.0)(img), as_tensor(img))
    # 2x: the centre 32x32 pixels fill the image
    ref = as_tensor(img.crop((16, 16, 48, 48)).resize((64, 64), Image.Resampling.BILINEAR))
    assert (zoom_transform(config, 2.0)(img) - ref).abs().mean() * 255 < 2.0


def _attention_from_the_paper(unit: SelectiveKernel, x: torch.Tensor) -> torch.Tensor:
    """Softmax selection weights (B, M, C) from Eqs. 1-5, using only the unit's learned tensors."""
    inputs = x.chunk(unit.num_paths, 1) if unit.split_input else [x] * unit.num_paths
    feats = []
    for path, inp in zip(unit.paths, inputs):
        conv, bn = path.conv, path.bn
        u = F.conv2d(inp, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        feats.append(F.relu(F.batch_norm(u, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)))
    s = sum(feats).mean((2, 3))
    attn = unit.attn
    z = F.relu(F.batch_norm(s @ attn.fc_reduce.weight.flatten(1).t(), attn.bn.running_mean, attn.bn.running_var,
                            attn.bn.weight, attn.bn.bias, eps=attn.bn.eps))
    return (z @ attn.fc_select.weight.flatten(1).t()).view(x.shape[0], unit.num_paths, -1).softmax(1)


def test_attention_difference_matches_a_manual_computation():
    model = randomize_batchnorm(timm.create_model('sknet_tiny', layers=(1, 1, 1, 1))).eval()
    config = timm.data.resolve_data_config(model=model)
    ds = SyntheticShapes(4, image_size=64, seed=0, center_jitter=0.0, scale_range=(0.2, 0.45))
    images = [ds.image(i) for i in range(len(ds))]
    analysis = run_scale_analysis(model, images, DEFAULT_SCALES)
    results = analysis.mean_diffs()
    units = [m for m in model.modules() if isinstance(m, SelectiveKernel)]
    assert list(results) == ['SK_2_1', 'SK_3_1', 'SK_4_1', 'SK_5_1'] and len(units) == 4

    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, i=i: inputs.__setitem__(i, args[0]))
             for i, m in enumerate(units)]
    for si, scale in enumerate(DEFAULT_SCALES):
        transform = zoom_transform(config, scale)
        with torch.no_grad():
            model(torch.stack([transform(im) for im in images]))
            for i, (name, unit) in enumerate(zip(results, units)):
                a = _attention_from_the_paper(unit, inputs[i])
                assert torch.allclose(a.sum(1), torch.ones(()))
                large, small = unit.kernel_sizes.index(max(unit.kernel_sizes)), unit.kernel_sizes.index(min(unit.kernel_sizes))
                expected = (a[:, large] - a[:, small]).mean().item()
                assert results[name][si] == pytest.approx(expected, abs=1e-5), (name, scale)
    for h in hooks:
        h.remove()
    assert not any(m._forward_hooks for m in model.modules()), 'the measurement removed its hooks'


def test_main_job_runs_offline_and_reports(tmp_path, capsys):
    result = run_main_job(str(tmp_path), num_images=8)
    out = capsys.readouterr().out
    samples = sorted(SAMPLES_DIR.glob('*.png'))
    assert len(result['predictions']) == len(samples) >= len(EMBEDDED_CLASSES)
    assert all(r['prediction'] in EMBEDDED_CLASSES for r in result['predictions'])
    assert "Does attention to the larger kernel grow with object size (the paper's claim)?" in out
    with open(tmp_path / 'attention_vs_scale.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 * len(DEFAULT_SCALES) and {r['unit'] for r in rows} == set(result['attention'])
    for row in rows:
        index = DEFAULT_SCALES.index(float(row['scale']))
        assert float(row['mean_diff']) == pytest.approx(result['attention'][row['unit']][index], abs=1e-6)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result['plot'] is None
    else:
        assert (tmp_path / 'attention_vs_scale.png').stat().st_size > 1000
