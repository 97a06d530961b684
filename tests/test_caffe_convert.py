"""The authors' Caffe SKNet-50 / SKNet-101 converted to timm, checked against an interpreter of Caffe's layers.

The authors' prototxts have no license, so the tests generate them (``render_official_prototxt``; compared with
the published files field by field once, when the converter was written). The caffemodels are random and
made here; ``caffe_reference`` parses the prototxt with protobuf's own text-format parser and runs the layers
from Caffe's definitions in plain torch functions. Nothing of ``timm_sknet.caffe`` but the generated
prototxt text reaches the reference.
"""
import hashlib
import json
import re
from pathlib import Path
from typing import Dict, List, NamedTuple

import numpy as np
import pytest
import torch
import yaml
from caffe_reference import blob_list, caffe_forward, caffemodel_bytes, parse_net, random_blobs
from helpers import rel_max_diff

import timm

from timm_sknet.caffe import CaffeError, convert_caffe, load_caffe_model, render_official_prototxt
from timm_sknet.cli import main

CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)  # the SENet pipeline's, which the SKNet authors used
TOLERANCE = 1e-4
PAPER_PARAMS = {'sknet50': 27.5e6, 'sknet101': 48.9e6}


class CaffeFiles(NamedTuple):
    prototxt: Path
    caffemodel: Path
    net: object  # the protobuf NetParameter the reference runs
    blobs: Dict[str, List[np.ndarray]]


def _write_files(folder: Path, key: str, text: str, seed: int, tiny_variance: bool = False) -> CaffeFiles:
    net = parse_net(text)
    blobs = random_blobs(net, seed=seed)
    if tiny_variance:  # stem channel 0: zero filter, mean -1e-3, variance 1e-6: its output depends on eps
        blobs['conv1/7x7_s2'][0][0] = 0
        blobs['conv1/7x7_s2/bn'][2][0, 0], blobs['conv1/7x7_s2/bn'][3][0, 0] = -1e-3, 1e-6
        blobs['conv1/7x7_s2/bn'][1][0, 0] = 0.1  # bias: the output stays above 0, where ReLU passes it
    prototxt, caffemodel = folder / f'{key}.prototxt', folder / f'{key}.caffemodel'
    prototxt.write_text(text)
    caffemodel.write_bytes(caffemodel_bytes(blob_list(net, blobs), name=key))
    return CaffeFiles(prototxt, caffemodel, net, blobs)


def _with_batchnorm_eps(text: str) -> str:
    """The prototxt with eps 1e-3 on every CuDNNBatchNorm, and 1e-6 (below cuDNN's 1e-5) on the stem's."""
    text = text.replace('type: "CuDNNBatchNorm"', 'type: "CuDNNBatchNorm"\n  batch_norm_param {\n    eps: 0.001\n  }')
    return text.replace('name: "conv1/7x7_s2/bn"\n  type: "CuDNNBatchNorm"\n  batch_norm_param {\n    eps: 0.001',
                        'name: "conv1/7x7_s2/bn"\n  type: "CuDNNBatchNorm"\n  batch_norm_param {\n    eps: 1e-06')


@pytest.fixture(scope='module')
def sknet50_files(tmp_path_factory):
    """SKNet-50 with random weights and non-default BatchNorm eps, which matters (so the eps rule is exercised)."""
    text = _with_batchnorm_eps(render_official_prototxt('sknet50'))
    assert text.count('eps: 0.001') == 84 and text.count('eps: 1e-06') == 1
    return _write_files(tmp_path_factory.mktemp('sknet50'), 'sknet50', text, seed=50, tiny_variance=True)


@pytest.fixture(scope='module')
def sknet101_files(tmp_path_factory):
    return _write_files(tmp_path_factory.mktemp('sknet101'), 'sknet101', render_official_prototxt('sknet101'), 101)


def _image(size: int) -> torch.Tensor:
    """An RGB image in [0, 1], as timm's transforms produce before normalising."""
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))


def _timm_logits(model, image: torch.Tensor) -> torch.Tensor:
    """What a timm user runs: normalise by the model's own data config, then forward."""
    config = timm.data.resolve_data_config({}, model=model)
    mean, std = (torch.tensor(config[k]).view(1, 3, 1, 1) for k in ('mean', 'std'))
    with torch.no_grad():
        return model.eval()((image - mean) / std)


def _caffe_logits(files: CaffeFiles, image: torch.Tensor) -> torch.Tensor:
    """What Caffe runs: BGR, 0-255, minus the means."""
    bgr = image.flip(1) * 255 - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    with torch.no_grad():
        return caffe_forward(files.net, files.blobs, bgr)['classifier']


def _assert_no_output(folder: Path) -> None:
    assert not folder.exists()
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(f'.{folder.name}')]  # no temp left


@pytest.mark.slow
def test_sknet50_folder_loads_in_timm_and_matches_caffe_at_224_and_225(sknet50_files, tmp_path):
    out = convert_caffe(sknet50_files.prototxt, sknet50_files.caffemodel, tmp_path / 'sknet50-caffe')
    model = timm.create_model(f'local-dir:{out}', pretrained=True)
    assert model.pretrained_cfg['architecture'] == 'sknet50_caffe'
    references = {size: _caffe_logits(sknet50_files, _image(size)) for size in (224, 225)}
    for size, reference in references.items():
        assert rel_max_diff(_timm_logits(model, _image(size)), reference) < TOLERANCE, size
    # the check can fail: the same weights with timm's padded stem pooling give other logits
    padded = timm.create_model('sknet50', pretrained_cfg_overlay=model.pretrained_cfg)
    padded.load_state_dict(model.state_dict())
    assert rel_max_diff(_timm_logits(padded, _image(225)), references[225]) > 1e-2


@pytest.mark.slow
def test_sknet101_matches_caffe_at_225_and_has_the_papers_48_9m_parameters(sknet101_files):
    model = load_caffe_model(sknet101_files.prototxt, sknet101_files.caffemodel)
    assert model.pretrained_cfg['architecture'] == 'sknet101_caffe'
    image = _image(225)
    assert rel_max_diff(_timm_logits(model, image), _caffe_logits(sknet101_files, image)) < TOLERANCE
    # parameters of the official prototxt: every learned blob (BatchNorm: scale and bias, not the statistics)
    prototxt_params = sum(b.size for name, blobs in sknet101_files.blobs.items()
                          for b in (blobs[:2] if name.endswith('/bn') else blobs))
    assert abs(prototxt_params - PAPER_PARAMS['sknet101']) / PAPER_PARAMS['sknet101'] < 0.005
    assert sum(p.numel() for p in model.parameters()) == prototxt_params
    # ... which is not sknet101's: the rule's d = 32 in stage conv3 has 49,280 more
    with torch.device('meta'):
        rule = timm.create_model('sknet101')
    assert sum(p.numel() for p in rule.parameters()) - prototxt_params == 49280


def test_other_means_go_into_the_config(sknet50_files):
    model = load_caffe_model(sknet50_files.prototxt, sknet50_files.caffemodel, mean_bgr=(100, 110, 120))
    assert model.pretrained_cfg['mean'] == pytest.approx((120 / 255, 110 / 255, 100 / 255))


# ---------------------------------------------------------------------------------------------------------
# bad input: one CaffeError naming the file and the layer, and no output folder
# ---------------------------------------------------------------------------------------------------------

def _convert_fails(prototxt, caffemodel, out: Path, *patterns: str) -> str:
    with pytest.raises(CaffeError) as info:
        convert_caffe(prototxt, caffemodel, out)
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    _assert_no_output(out)
    return message


def test_a_truncated_caffemodel_names_the_file_and_the_layer(sknet50_files, tmp_path):
    data = sknet50_files.caffemodel.read_bytes()
    cut = tmp_path / 'cut.caffemodel'
    cut.write_bytes(data[:len(data) * 3 // 5])
    _convert_fails(sknet50_files.prototxt, cut, tmp_path / 'out', re.escape(str(cut)), r"layer 'conv\d_\d+/",
                   'truncated', 'download it again')


def test_a_caffemodel_cut_between_layers_names_the_first_missing_layer(sknet50_files, tmp_path):
    layers = blob_list(sknet50_files.net, sknet50_files.blobs)
    cut = tmp_path / 'cut.caffemodel'
    cut.write_bytes(caffemodel_bytes(layers[:-12]))  # ends before conv5_3/1x1_increase
    _convert_fails(sknet50_files.prototxt, cut, tmp_path / 'out', re.escape(str(cut)),
                   "no weights for layer 'conv5_3/1x1_increase'")


@pytest.mark.parametrize('content', [b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4, b'{"weights": [1, 2, 3]}\n',
                                     b'\x08\x96\x01'])
def test_a_foreign_file_is_not_taken_for_a_caffemodel(sknet50_files, tmp_path, content):
    foreign = tmp_path / 'model.caffemodel'
    foreign.write_bytes(content)
    _convert_fails(sknet50_files.prototxt, foreign, tmp_path / 'out', re.escape(str(foreign)),
                   'not a valid caffemodel|no Caffe layers')


def test_a_safetensors_file_is_not_taken_for_a_caffemodel(sknet50_files, tmp_path):
    from safetensors.torch import save_file
    foreign = tmp_path / 'model.safetensors'
    save_file({'w': torch.zeros(3)}, str(foreign))
    _convert_fails(sknet50_files.prototxt, foreign, tmp_path / 'out', re.escape(str(foreign)))


def _nan_weight(blobs):
    weight = blobs[0].copy()
    weight[0, 0, 0, 0] = np.nan
    return [weight]


@pytest.mark.parametrize('layer, change, patterns', [
    ('conv3_2/B_fc1', lambda blobs: [np.zeros((16, 256, 1, 1), np.float32)],
     [r'has shape \(16, 256, 1, 1\)', r'needs \(32, 256, 1, 1\)']),
    ('conv4_1/3x3g32/bn', lambda blobs: blobs[2:] + blobs[:1], ['has 3 blobs', 'needs 4']),  # BVLC's BatchNorm
    ('classifier', lambda blobs: blobs[:1], ['has 1 blobs', 'needs 2']),
    ('conv2_3/1x1_increase', _nan_weight, ['NaN']),
])
def test_a_caffemodel_that_disagrees_with_the_prototxt_names_file_and_layer(sknet50_files, tmp_path, layer, change,
                                                                           patterns):
    blobs = dict(sknet50_files.blobs)
    blobs[layer] = change(blobs[layer])
    bad = tmp_path / 'bad.caffemodel'
    bad.write_bytes(caffemodel_bytes(blob_list(sknet50_files.net, blobs)))
    _convert_fails(sknet50_files.prototxt, bad, tmp_path / 'out', re.escape(str(bad)), f"layer '{layer}'", *patterns)


def test_a_layer_of_another_type_in_the_caffemodel_is_named(sknet50_files, tmp_path):
    layers = [(name, 'Scale' if name == 'conv4_2/1x1_reduce/bn' else kind, blobs)
              for name, kind, blobs in blob_list(sknet50_files.net, sknet50_files.blobs)]
    bad = tmp_path / 'bad.caffemodel'
    bad.write_bytes(caffemodel_bytes(layers))
    _convert_fails(sknet50_files.prototxt, bad, tmp_path / 'out', re.escape(str(bad)),
                   "layer 'conv4_2/1x1_reduce/bn' is a Scale in the caffemodel but a CuDNNBatchNorm in the prototxt")


def test_a_prototxt_of_another_network_names_the_first_layer_that_differs(sknet50_files, tmp_path):
    text = sknet50_files.prototxt.read_text()
    at = text.index('name: "conv3_2/B_fc1"')
    changed = tmp_path / 'changed.prototxt'
    changed.write_text(text[:at] + text[at:].replace('num_output: 32', 'num_output: 16', 1))
    _convert_fails(changed, sknet50_files.caffemodel, tmp_path / 'out', re.escape(str(changed)),
                   "'conv3_2/B_fc1'", 'num_output is 16 where the official one has 32')
    # without the SK units' second path and attention (a ResNeXt, nearly): the first missing layer is named
    layers = text.split('\nlayer {')
    kept = [layer for layer in layers if not re.search(r'name: "conv\d_\d+(/3x3g32d2|/B_|/scale|_3x3)', layer)]
    other = tmp_path / 'resnext.prototxt'
    other.write_text('\nlayer {'.join(kept))
    _convert_fails(other, sknet50_files.caffemodel, tmp_path / 'out', re.escape(str(other)),
                   "'conv2_1/1x1_increase'.*'conv2_1/3x3g32d2'")
    broken = tmp_path / 'broken.prototxt'
    broken.write_text('layer {\n  name: "conv1"\n  type: Convolution"\n}\n')
    _convert_fails(broken, sknet50_files.caffemodel, tmp_path / 'out', re.escape(str(broken)) + ':3:')


def test_swapped_arguments_say_so(sknet50_files, tmp_path):
    _convert_fails(sknet50_files.caffemodel, sknet50_files.prototxt, tmp_path / 'out',
                   re.escape(str(sknet50_files.caffemodel)), 'not a text file.*swap')


def test_files_of_the_two_networks_do_not_mix(sknet50_files, sknet101_files, tmp_path):
    _convert_fails(sknet101_files.prototxt, sknet50_files.caffemodel, tmp_path / 'out',
                   "no weights for layer 'conv4_7/1x1_reduce', which SKNet-101 needs",
                   re.escape(str(sknet50_files.caffemodel)))
    _convert_fails(sknet50_files.prototxt, sknet101_files.caffemodel, tmp_path / 'out',
                   "'conv4_7/1x1_reduce'.*has no place in SKNet-50", re.escape(str(sknet101_files.caffemodel)))


def test_a_full_output_folder_is_kept_unless_overwrite(sknet50_files, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'mine.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='overwrite'):
        convert_caffe(sknet50_files.prototxt, sknet50_files.caffemodel, out)
    assert [p.name for p in out.iterdir()] == ['mine.txt']
    convert_caffe(sknet50_files.prototxt, sknet50_files.caffemodel, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']


# ---------------------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------------------

def test_cli_convert_caffe_writes_a_folder_with_the_card_and_says_how_to_load_it(sknet50_files, tmp_path, capsys):
    out = tmp_path / 'sknet50-caffe'
    rc = main(['convert-caffe', str(sknet50_files.prototxt), str(sknet50_files.caffemodel), str(out),
               '--repo-id', 'me/sknet50-caffe'])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    assert f"local-dir:{out}" in stdout and 'sknet50_caffe' in stdout
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True).state_dict()
    direct = load_caffe_model(sknet50_files.prototxt, sknet50_files.caffemodel).state_dict()
    assert all(torch.equal(loaded[k], direct[k]) for k in direct)
    # the card: source files by sha256, the license situation, the preprocessing
    card = (out / 'README.md').read_text()
    meta = yaml.safe_load(card.split('---\n')[1])
    assert meta['license'] == 'unknown' and meta['library_name'] == 'timm'
    assert meta['weights_sha256']['model.safetensors'] == hashlib.sha256((out / 'model.safetensors').read_bytes()).hexdigest()
    for path in (sknet50_files.prototxt, sknet50_files.caffemodel):
        assert hashlib.sha256(path.read_bytes()).hexdigest() in card
    assert 'github.com/implus/SKNet' in card and 'drive.google.com' in card and 'no license' in card
    assert 'BGR' in card and '(104.0, 117.0, 123.0)' in card and "hf-hub:me/sknet50-caffe" in card
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'sknet50_caffe'
    assert config['pretrained_cfg']['mean'] == pytest.approx([123 / 255, 117 / 255, 104 / 255])
    assert config['pretrained_cfg']['std'] == pytest.approx([1 / 255] * 3)


def test_cli_convert_caffe_bad_input_is_one_line_and_exit_2(sknet50_files, tmp_path, capsys):
    cut = tmp_path / 'cut.caffemodel'
    cut.write_bytes(sknet50_files.caffemodel.read_bytes()[:100_000])
    out = tmp_path / 'out'
    rc = main(['convert-caffe', str(sknet50_files.prototxt), str(cut), str(out)])
    stdout, stderr = capsys.readouterr()
    assert rc == 2 and stdout == ''
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith('timm-sknet: error: ')
    assert str(cut) in stderr and "layer '" in stderr
    _assert_no_output(out)
