"""features_only, output_stride, every feature_cls, intermediates and in_chans, checked against timm's SK models.

timm's skresnet18 / skresnet34 / skresnext50_32x4d carry the same parameter names as sknet18 / 34 / 50, so
one state dict drives both; BatchNorm running statistics and affine parameters are randomised first, so a
wrong dilation, padding or path order cannot hide behind identity-like normalisation.

The dilation checks run at 64x64 (a dilated 3x3 must see more than its centre tap); the rest at 32x32.
"""
import math

import helpers
import pytest
import torch
from helpers import randomize_batchnorm as randomise_batchnorm
from safetensors.torch import save_file
from torch import nn

import timm

from timm_sknet import SelectiveKernel

TIMM_TWINS = dict(helpers.TIMM_TWINS)
FEATURE_CLASSES = ('list', 'dict', 'hook', 'fx', 'getter')
BASIC_CHANNELS = [64, 64, 128, 256, 512]
BOTTLENECK_CHANNELS = [64, 256, 512, 1024, 2048]
REDUCTIONS = {8: [2, 4, 8, 8, 8], 16: [2, 4, 8, 16, 16], 32: [2, 4, 8, 16, 32]}


def kaiming_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-normal convolutions (as timm's ResNet init) for a model materialised with ``to_empty``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.num_batches_tracked.zero_()
    return model


def as_list(features):
    return list(features.values()) if isinstance(features, dict) else list(features)


def assert_features_equal(ours, ref):
    ours, ref = as_list(ours), as_list(ref)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        # relative to the feature's scale: a wrong dilation or path order is an O(1) difference
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


@pytest.fixture(scope='module')
def skresnet18_file(tmp_path_factory):
    """timm's skresnet18 with random weights and randomised BatchNorm, saved as safetensors."""
    torch.manual_seed(123)
    model = randomise_batchnorm(timm.create_model('skresnet18'))
    path = tmp_path_factory.mktemp('weights') / 'skresnet18.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def from_file(name, path, **kwargs):
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kwargs).eval()


@pytest.mark.parametrize('name', ['sknet18', 'sknet34', 'sknet50', 'sknet101', 'sknet152'])
def test_feature_maps_of_every_variant_at_every_output_stride(name):
    """Channels, reductions and actual map sizes of all five levels; built on the meta device (no compute)."""
    channels = BASIC_CHANNELS if name in ('sknet18', 'sknet34') else BOTTLENECK_CHANNELS
    for output_stride, reductions in REDUCTIONS.items():
        with torch.device('meta'):
            model = timm.create_model(name, features_only=True, output_stride=output_stride).eval()
            features = model(torch.empty(2, 3, 128, 128))
        assert model.feature_info.channels() == channels
        assert model.feature_info.reduction() == reductions
        assert [tuple(f.shape) for f in features] == [
            (2, c, 128 // r, 128 // r) for c, r in zip(channels, reductions)]


@pytest.mark.parametrize('output_stride', [8, 16, 32])
@pytest.mark.parametrize('name', sorted(TIMM_TWINS))
def test_features_equal_timm_sk_models_at_every_output_stride(name, output_stride):
    # built on the meta device and filled once: default init of two ResNeXt-50s would dominate the test
    with torch.device('meta'):
        ref = timm.create_model(TIMM_TWINS[name], features_only=True, output_stride=output_stride)
        ours = timm.create_model(name, features_only=True, output_stride=output_stride)
    ref = randomise_batchnorm(kaiming_init(ref.to_empty(device="cpu")), seed=1).eval()
    ours.load_state_dict(ref.state_dict(), assign=True)  # strict: the same names and shapes
    ours.eval()
    x = torch.randn(1, 3, 64, 64)  # eval mode: batch 1 is enough, and halves the cost of the ResNeXt
    with torch.no_grad():
        assert_features_equal(ours(x), ref(x))
    # the dilated units really are dilated: each SK path's dilation follows the output stride
    stage4_sk = [m for n, m in ours.named_modules() if n.startswith('layer4') and isinstance(m, SelectiveKernel)]
    expected = {32: 1, 16: 2, 8: 4}[output_stride]
    assert stage4_sk[-1].paths[0].conv.dilation == (expected, expected)
    assert stage4_sk[-1].paths[1].conv.dilation == (2 * expected, 2 * expected)


@pytest.fixture(scope='module')
def reference_features(skresnet18_file):
    """All five levels of timm's skresnet18 features for one input."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    ref = from_file('skresnet18', skresnet18_file, features_only=True)
    with torch.no_grad():
        return x, ref(x), ref.feature_info


@pytest.mark.parametrize('feature_cls', FEATURE_CLASSES)
def test_every_feature_cls_gives_timm_features(feature_cls, skresnet18_file, reference_features):
    x, ref_features, ref_info = reference_features
    for out_indices in [(0, 1, 2, 3, 4), (1, -1)]:
        ours = from_file(
            'sknet18', skresnet18_file, features_only=True, out_indices=out_indices, feature_cls=feature_cls)
        levels = [i % 5 for i in out_indices]
        assert ours.feature_info.channels() == [ref_info.channels()[i] for i in levels]
        assert ours.feature_info.reduction() == [ref_info.reduction()[i] for i in levels]
        with torch.no_grad():
            features = ours(x)
        assert isinstance(features, dict if feature_cls == 'dict' else list)
        assert_features_equal(features, [ref_features[i] for i in levels])


def test_out_indices_select_levels(skresnet18_file):
    model = from_file('sknet18', skresnet18_file, features_only=True, out_indices=(2, 4))
    assert model.feature_info.channels() == [128, 512]
    assert model.feature_info.reduction() == [8, 32]
    assert [f.shape[1:] for f in model(torch.randn(2, 3, 64, 64))] == [(128, 8, 8), (512, 2, 2)]


def test_forward_intermediates_match_timm(skresnet18_file):
    ours, ref = from_file('sknet18', skresnet18_file), from_file('skresnet18', skresnet18_file)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, inter = ours.forward_intermediates(x, indices=[1, 3])
        ref_final, ref_inter = ref.forward_intermediates(x, indices=[1, 3])
        assert_features_equal([final], [ref_final])
        assert_features_equal(inter, ref_inter)
        only = ours.forward_intermediates(x, indices=2, intermediates_only=True)  # last two levels
        assert_features_equal(only, ref.forward_intermediates(x, indices=2, intermediates_only=True))
        early = ours.forward_intermediates(x, indices=[0, 2], stop_early=True, intermediates_only=True)
        assert_features_equal(early, ref.forward_intermediates(x, indices=[0, 2], intermediates_only=True))
        # the final features of forward_intermediates are forward_features
        assert_features_equal([final], [ours.forward_features(x)])


def test_prune_intermediate_layers(skresnet18_file):
    ours, ref = from_file('sknet18', skresnet18_file), from_file('skresnet18', skresnet18_file)
    n_params = sum(p.numel() for p in ours.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    assert ours.prune_intermediate_layers([1, 2]) == [1, 2]
    assert sum(p.numel() for p in ours.parameters()) < n_params / 2  # stages 3 and 4 and the head are gone
    assert not any(n.startswith(('layer3.', 'layer4.', 'fc.')) for n, _ in ours.named_parameters())
    with torch.no_grad():
        assert_features_equal(ours.forward_intermediates(x, indices=[1, 2], intermediates_only=True), expected)


@pytest.mark.parametrize('in_chans', [1, 5])
def test_in_chans_with_pretrained_weights_adapts_first_conv(in_chans, skresnet18_file):
    from safetensors.torch import load_file
    w = load_file(skresnet18_file)['conv1.weight']  # (64, 3, 7, 7)
    # timm's adaptation: sum over RGB for 1 channel; else tile RGB and rescale by 3 / in_chans
    if in_chans == 1:
        expected = w.sum(dim=1, keepdim=True)
    else:
        expected = w.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans] * (3 / in_chans)
    ours = from_file('sknet18', skresnet18_file, in_chans=in_chans, features_only=True)
    torch.testing.assert_close(ours.conv1.weight, expected)
    ref = from_file('skresnet18', skresnet18_file, in_chans=in_chans, features_only=True)
    x = torch.randn(2, in_chans, 32, 32)
    with torch.no_grad():
        assert_features_equal(ours(x), ref(x))
