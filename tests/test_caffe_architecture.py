"""sknet50_caffe / sknet101_caffe: the two ways the authors' Caffe networks differ from sknet50 / sknet101.

Caffe's stem max pool (3x3, stride 2, no padding, output size rounded up) and SKNet-101's d = 16 in its second
stage, each as an option of ``SKNet`` (``stem_pool``, ``stage_attn_channels``), checked against Caffe's pooling
rule written out in ``caffe_reference`` and against the widths in the authors' prototxt.
"""
import pytest
import torch
from caffe_reference import _caffe_pool_size, _pool, caffe_messages
from helpers import randomize_batchnorm, rel_max_diff

import timm

from timm_sknet import WeightsError
from timm_sknet.inference import fuse_model
from timm_sknet.models.sknets import CAFFE_SOURCES, SKNet


def _caffe_max_pool_3x3_s2(x: torch.Tensor) -> torch.Tensor:
    layer = caffe_messages()['LayerParameter'](name='pool1', type='Pooling')
    layer.pooling_param.kernel_size, layer.pooling_param.stride = 3, 2
    return _pool(layer, x)


@pytest.fixture(scope='module')
def stem_pools():
    with torch.device('meta'):
        return timm.create_model('sknet50_caffe').maxpool, timm.create_model('sknet50').maxpool


@pytest.mark.parametrize('size', [5, 6, 7, 8, 111, 112, 113])
def test_caffe_stem_pool_equals_caffes_rounding(size, stem_pools):
    caffe, timm_pool = stem_pools
    x = torch.randn(2, 4, size, size)
    expected = _caffe_max_pool_3x3_s2(x)
    assert expected.shape[-1] == _caffe_pool_size(size, 3, 2, 0) == -(-(size - 3) // 2) + 1
    assert torch.equal(caffe(x), expected)
    # timm's padded pool is another operation at every size: other windows, and one more row at odd sizes
    padded = timm_pool(x)
    assert padded.shape != expected.shape if size % 2 else not torch.equal(padded, expected)


def test_sknet101_caffe_has_d_16_in_its_second_stage_only():
    with torch.device('meta'):
        model = timm.create_model('sknet101_caffe')
        rule = timm.create_model('sknet101')
    widths = [{m.attn.fc_reduce.out_channels for m in stage.modules() if hasattr(m, 'attn')}
              for stage in (model.layer1, model.layer2, model.layer3, model.layer4)]
    assert widths == [{32}, {16}, {32}, {64}]  # as the prototxt's conv2_x .. conv5_x B_fc1 num_output
    assert [(n, p.shape) for n, p in model.named_parameters() if 'layer2' not in n] == \
        [(n, p.shape) for n, p in rule.named_parameters() if 'layer2' not in n]


def test_a_changed_attention_width_trains_and_fuses():
    model = timm.create_model('sknet_tiny', num_classes=4, layers=(1, 1, 1, 1), stage_attn_channels=(None, 8, None, 24))
    assert model.layer2[0].conv1.attn.fc_reduce.out_channels == 8
    assert model.layer4[0].conv1.attn.fc_reduce.out_channels == 24
    assert model.layer3[0].conv1.attn.fc_reduce.out_channels == 16  # the rule's max(64 / 8, 16)
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    randomize_batchnorm(model).eval()
    with torch.no_grad():
        assert rel_max_diff(fuse_model(model)(x), model(x)) < 1e-5


@pytest.mark.parametrize('kwargs, message', [
    (dict(stem_pool='ceil'), 'stem_pool must be one of'),
    (dict(stem_pool='caffe', replace_stem_pool=True), 'cannot be combined'),
    (dict(stage_attn_channels=(None, 16)), 'one positive int or None per stage'),
    (dict(stage_attn_channels=(None, 0, None, None)), 'one positive int or None per stage'),
])
def test_bad_caffe_options_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SKNet(layers=(1, 1, 1, 1), **kwargs)


@pytest.mark.parametrize('name', sorted(CAFFE_SOURCES))
def test_pretrained_true_says_where_to_get_the_caffe_model_and_how_to_convert_it(name):
    with pytest.raises(WeightsError) as info:
        timm.create_model(name, pretrained=True)
    message = str(info.value)
    source = CAFFE_SOURCES[name]
    assert source.caffemodel_url in message and source.prototxt in message
    assert 'timm-sknet convert-caffe' in message and 'local-dir:' in message and 'without a license' in message
