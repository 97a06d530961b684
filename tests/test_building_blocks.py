"""The public building blocks: SEModule, SKBottleneck / SKBasicBlock, SKNet constructed directly, errors.

What a block does beyond the SK unit (SE after the last conv, drop path, zero_init_last) is compared with timm's
own SK blocks (``timm.models.sknet``), which do the same things the same way: same weights, same outputs.
"""
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_batchnorm, rel_max_diff

import timm

from timm_sknet import SEModule, SKBasicBlock, SKBottleneck, SKNet, WeightsError
from timm_sknet.cli import main


def test_se_module_matches_its_definition():
    se = SEModule(32, reduction=4).eval()
    x = torch.randn(2, 32, 5, 5)
    s = x.mean((2, 3))                                                   # squeeze
    h = F.relu(s @ se.fc1.weight.flatten(1).t() + se.fc1.bias)           # C -> C/r
    g = torch.sigmoid(h @ se.fc2.weight.flatten(1).t() + se.fc2.bias)    # C/r -> C
    assert se.fc1.out_channels == 8 and se.in_channels == 32 and se.reduction == 4
    torch.testing.assert_close(se(x), x * g[:, :, None, None])
    # C / r, as in the SE paper, not rounded to a multiple of 8 (timm's default for 'se'); halves round up
    assert SEModule(24, reduction=4).fc1.out_channels == 6 and SEModule(40, reduction=16).fc1.out_channels == 3


def test_se_module_rejects_bad_reduction():
    with pytest.raises(ValueError, match='reduction'):
        SEModule(32, reduction=0)


def test_se_as_timm_attn_layer():
    with torch.device('meta'):
        model = timm.create_model('sknet50', block_args=dict(attn_layer=SEModule))
    assert isinstance(model.layer1[0].se, SEModule) and model.layer1[0].se.in_channels == 256
    assert model.layer1[0].conv2.num_paths == 2  # SK settings survive extra block_args


# timm's SK models with the SK settings of their entrypoints, for block_args that replace them wholesale
_TIMM_SK_KWARGS = {
    'skresnext50_32x4d': dict(rd_ratio=1 / 16, rd_divisor=32, split_input=False),
    'skresnet18': dict(rd_ratio=1 / 8, rd_divisor=16, split_input=True),
}
_SMALL = dict(layers=(1, 1, 1, 1), num_classes=10)


def _timm_sk(name: str, attn_layer=None, **kwargs):
    block_args = dict(sk_kwargs=_TIMM_SK_KWARGS[name], attn_layer=attn_layer)
    return timm.create_model(name, block_args=block_args, **_SMALL, **kwargs)


def test_se_inside_a_block_runs_as_in_timms_sk_blocks():
    """sknet50 with SE in every block against timm's skresnext50_32x4d with SE, the same weights."""
    reference = randomize_batchnorm(_timm_sk('skresnext50_32x4d', attn_layer='se'), seed=3).eval()
    model = timm.create_model('sknet50', block_args=dict(attn_layer='se'), **_SMALL).eval()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        assert rel_max_diff(model(x), expected) < 1e-5
        # the SE modules matter here: without them the output is another one
        for block in (model.layer1[0], model.layer2[0], model.layer3[0], model.layer4[0]):
            block.se = torch.nn.Identity()
        assert rel_max_diff(model(x), expected) > 1e-2


@pytest.mark.parametrize('ours, theirs', [('sknet18', 'skresnet18'), ('sknet50', 'skresnext50_32x4d')])
def test_drop_path_in_training_matches_timms_blocks(ours, theirs):
    """Stochastic depth: with the same seed, timm's blocks and ours drop the same residual branches."""
    reference = _timm_sk(theirs, drop_path_rate=0.5).train()
    model = timm.create_model(ours, drop_path_rate=0.5, **_SMALL).train()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.manual_seed(7)
        expected = reference(x)
        torch.manual_seed(7)
        got = model(x)
        torch.manual_seed(8)
        other_draw = model(x)
    assert rel_max_diff(got, expected) < 1e-5
    assert rel_max_diff(other_draw, expected) > 1e-3, 'another seed drops other branches: the paths were dropped'


def _zero_scales(model) -> set:
    """Names of the BatchNorm scales that are all zero."""
    return {name for name, m in model.named_modules()
            if isinstance(m, torch.nn.BatchNorm2d) and m.weight is not None and not m.weight.any()}


@pytest.mark.parametrize('ours, theirs', [('sknet18', 'skresnet18'), ('sknet50', 'skresnext50_32x4d')])
def test_zero_init_last_zeroes_the_batchnorms_timm_zeroes(ours, theirs):
    """timm's ResNet calls every block's zero_init_last(); timm's SK blocks zero the last BN's scale."""
    expected = _zero_scales(_timm_sk(theirs, zero_init_last=True))
    assert expected and all(name.endswith(('conv2.bn', 'conv3.bn')) for name in expected)
    assert _zero_scales(timm.create_model(ours, **_SMALL)) == expected  # the default, as in timm's ResNet
    assert _zero_scales(timm.create_model(ours, zero_init_last=False, **_SMALL)) == set()


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
    assert '| 27.48 | 4.463 |' in row and '| 27.5 | 4.47 | 79.21 |' in row  # measured, then the paper's Table 2
