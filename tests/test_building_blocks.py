"""The public building blocks: SEModule, SKBottleneck / SKBasicBlock, SKNet constructed directly, errors."""
import pytest
import torch
import torch.nn.functional as F

import timm

from timm_sknet import SEModule, SKBasicBlock, SKBottleneck, SKNet, WeightsError
from timm_sknet.tools.cli import main


def test_se_module_matches_its_definition():
    se = SEModule(32, reduction=4).eval()
    x = torch.randn(2, 32, 5, 5)
    s = x.mean((2, 3))                                                   # squeeze
    h = F.relu(s @ se.fc1.weight.flatten(1).t() + se.fc1.bias)           # C -> C/r
    g = torch.sigmoid(h @ se.fc2.weight.flatten(1).t() + se.fc2.bias)    # C/r -> C
    assert se.fc1.out_channels == 8 and se.in_channels == 32 and se.reduction == 4
    torch.testing.assert_close(se(x), x * g[:, :, None, None])


def test_se_module_rejects_bad_reduction():
    with pytest.raises(ValueError, match='reduction'):
        SEModule(32, reduction=0)


def test_se_as_timm_attn_layer():
    with torch.device('meta'):
        model = timm.create_model('sknet50', block_args=dict(attn_layer=SEModule))
    assert isinstance(model.layer1[0].se, SEModule) and model.layer1[0].se.in_channels == 256
    assert model.layer1[0].conv2.num_paths == 2  # SK settings survive extra block_args


def test_sknet_seed_api():
    model = SKNet(SKBottleneck, [1, 1, 1, 1], num_classes=10, kernel_sizes=[3, 5, 7], base_width=4, cardinality=8)
    assert (model.kernel_sizes, model.base_width, model.cardinality) == ([3, 5, 7], 4, 8)
    unit = model.layer2[0].conv2
    assert unit.num_paths == 3 and unit.paths[0].conv.groups == 8 and unit.out_channels == 8 * 8
    model.eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_basic_block_rejects_grouped_widths():
    with pytest.raises(ValueError, match='cardinality=1 and base_width=64'):
        SKNet(SKBasicBlock, [1, 1, 1, 1], cardinality=32, base_width=4)


def test_no_weights_for_sknet101_is_a_clear_error():
    with pytest.raises(WeightsError) as info:
        timm.create_model('sknet101', pretrained=True)
    message = str(info.value)
    assert 'sknet101' in message and 'sknet50.ra_in1k' in message and 'pretrained_cfg_overlay' in message


def test_main_job_lists_models_beside_the_paper(capsys):
    assert main(['list']) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith('| sknet50 '))
    assert '27.48' in row and '27.50' in row and '4.463' in row and '4.470' in row
