"""SelectiveKernel against a naive implementation of the paper's equations, and its argument checks."""
import pytest
import torch
from helpers import naive_selective_kernel, randomize_batchnorm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timm_sknet import SelectiveKernel
from timm_sknet.layers import attn_channels_for

CONFIGS = [
    dict(in_channels=16, out_channels=16, kernel_sizes=[3, 5]),
    dict(in_channels=16, out_channels=24, kernel_sizes=[3, 5, 7]),
    dict(in_channels=32, out_channels=32, kernel_sizes=[3, 5], groups=8),
    dict(in_channels=16, out_channels=32, kernel_sizes=[3, 5], stride=2),
    dict(in_channels=16, out_channels=16, kernel_sizes=[3, 5, 7], stride=2, groups=4),
    dict(in_channels=16, out_channels=16, kernel_sizes=[3, 5], split_input=True),
    dict(in_channels=24, out_channels=16, kernel_sizes=[1, 3, 5], split_input=True, groups=2),
    dict(in_channels=16, out_channels=16, kernel_sizes=[3, 5], dilation=2),
    dict(in_channels=8, out_channels=8, kernel_sizes=[3, 5], dilated_kernels=False),
    dict(in_channels=8, out_channels=8, kernel_sizes=[3, 7], dilated_kernels=False, stride=2),
]

_GEOMETRY = ('kernel_sizes', 'stride', 'groups', 'dilation', 'dilated_kernels', 'split_input')


def _unit_and_reference(cfg, x, training=False):
    unit = randomize_batchnorm(SelectiveKernel(**cfg, min_attn_channels=4))
    unit.train(training)
    geometry = {k: v for k, v in cfg.items() if k in _GEOMETRY}
    expected = naive_selective_kernel(unit, x, training=training, **geometry)
    return unit(x), expected


@pytest.mark.parametrize('cfg', CONFIGS, ids=lambda c: '-'.join(f'{k}={v}' for k, v in c.items()))
def test_matches_paper_equations(cfg):
    x = torch.randn(2, cfg['in_channels'], 13, 11)
    with torch.no_grad():
        out, expected = _unit_and_reference(cfg, x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cfg', CONFIGS[:5:2])
def test_matches_paper_equations_in_training_mode(cfg):
    x = torch.randn(4, cfg['in_channels'], 9, 9)
    out, expected = _unit_and_reference(cfg, x, training=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('size', [7, 8, 15])
def test_padding_none_keeps_spatial_size(stride, size):
    unit = SelectiveKernel(8, 8, kernel_sizes=[3, 5, 7], stride=stride).eval()
    out = unit(torch.randn(1, 8, size, size))
    assert out.shape[-1] == -(-size // stride)  # ceil(size / stride), like a 3x3 "same" conv


def test_paper_geometry_for_sknet50_unit():
    """SKNet-50: 3x3 and 3x3 dilation 2 (the paper's "5x5"), G=32, d = max(C/16, 32)."""
    unit = SelectiveKernel(128, 128, kernel_sizes=[3, 5], groups=32)
    convs = [p.conv for p in unit.paths]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3)]
    assert [c.dilation for c in convs] == [(1, 1), (2, 2)]
    assert [c.groups for c in convs] == [32, 32]
    assert unit.attn.fc_reduce.out_channels == 32
    assert SelectiveKernel(1024, 1024, groups=32).attn.fc_reduce.out_channels == 64


def test_true_kernels_option():
    unit = SelectiveKernel(8, 8, kernel_sizes=[3, 5], dilated_kernels=False)
    assert [p.conv.kernel_size for p in unit.paths] == [(3, 3), (5, 5)]
    assert [p.conv.dilation for p in unit.paths] == [(1, 1), (1, 1)]


def test_explicit_padding():
    unit = SelectiveKernel(8, 8, kernel_sizes=[3, 5], padding=[0, 1]).eval()  # 'valid'-style
    assert unit(torch.randn(1, 8, 10, 10)).shape[-1] == 8


@pytest.mark.parametrize('kwargs, message', [
    (dict(kernel_sizes=[3]), 'at least 2 paths'),
    (dict(kernel_sizes=[3, 4]), 'positive odd'),
    (dict(kernel_sizes=[0, 3]), 'positive odd'),
    (dict(kernel_sizes=[-3, 3]), 'positive odd'),
    (dict(groups=3), 'divisible by groups'),
    (dict(in_channels=15, split_input=True), 'divisible by the number of paths'),
    (dict(padding=1), 'different output sizes'),
    (dict(padding=[1, 2, 3]), 'one per path'),
    (dict(reduction=0), 'reduction must be > 0'),
    (dict(reduction=-4), 'reduction must be > 0'),
    (dict(stride=0), 'stride must be a positive int'),
    (dict(attn_channels=0), 'attn_channels'),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    args = dict(in_channels=16, out_channels=16, kernel_sizes=[3, 5])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SelectiveKernel(**args)


# --- fuzz: valid arguments run and match the reference; invalid ones raise the documented ValueError


def _expected_error(in_ch, out_ch, kernel_sizes, stride, groups, reduction, split_input, padding):
    """The documented rules, restated independently of the implementation. None means valid."""
    if len(kernel_sizes) < 2:
        return 'at least 2 paths'
    if any(k <= 0 or k % 2 == 0 for k in kernel_sizes):
        return 'positive odd'
    if reduction <= 0:
        return 'reduction must be > 0'
    path_in = in_ch
    if split_input:
        if in_ch % len(kernel_sizes):
            return 'divisible by the number of paths'
        path_in = in_ch // len(kernel_sizes)
    if path_in % groups or out_ch % groups:
        return 'divisible by groups'
    if padding is not None:
        extents = [2 * ((k - 1) // 2) + 1 if k > 3 else k for k in kernel_sizes]  # dilated 3x3 spans k
        if len({2 * padding - e for e in extents}) != 1:
            return 'different output sizes'
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    in_ch=st.sampled_from([4, 6, 8, 12]),
    out_ch=st.sampled_from([4, 6, 8]),
    kernel_sizes=st.lists(st.integers(-1, 8), min_size=1, max_size=3),
    stride=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2, 3, 4]),
    reduction=st.sampled_from([-1, 0, 0.5, 2, 16]),
    split_input=st.booleans(),
    padding=st.one_of(st.none(), st.integers(0, 3)),
)
def test_fuzz_arguments(in_ch, out_ch, kernel_sizes, stride, groups, reduction, split_input, padding):
    args = dict(in_channels=in_ch, out_channels=out_ch, kernel_sizes=kernel_sizes, stride=stride,
                groups=groups, reduction=reduction, split_input=split_input, padding=padding,
                min_attn_channels=2)
    error = _expected_error(in_ch, out_ch, kernel_sizes, stride, groups, reduction, split_input, padding)
    if error is not None:
        with pytest.raises(ValueError, match=error):
            SelectiveKernel(**args)
        return
    unit = randomize_batchnorm(SelectiveKernel(**args)).eval()
    x = torch.randn(2, in_ch, 9, 9)
    with torch.no_grad():
        out = unit(x)
        if padding is None:  # the reference uses "same" padding
            expected = naive_selective_kernel(
                unit, x, kernel_sizes, stride=stride, groups=groups, split_input=split_input)
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert out.shape[:2] == (2, out_ch) and torch.isfinite(out).all()
    assert unit.attn.fc_reduce.out_channels == max(round(out_ch / reduction), 2)


def test_attn_width_rule():
    """d = max(C / r, L), the paper's Eq. 4."""
    assert attn_channels_for(256, 16, 32) == 32
    assert attn_channels_for(1024, 16, 32) == 64
    assert attn_channels_for(512, 8, 16) == 64
    assert attn_channels_for(64, 8, 16) == 16
