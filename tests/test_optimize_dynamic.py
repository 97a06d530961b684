"""``optimize(..., dynamic_size=True)``: one build serves detector-like sizes on every backend; without it every
backend refuses another size with the same advice, before its runtime sees the input.

The reference is the plain eager model at each size (tolerances: ``TOLERANCES``, relative to the largest output).
"""
import importlib.util
import pickle

import pytest
import torch
from helpers import randomize_batchnorm

import timm

from timm_sknet.detection import sknet_fpn_backbone
from timm_sknet.inference import BACKENDS, TOLERANCES, optimize
from timm_sknet.inference.outputs import as_list, relative_error

BUILT = (3, 64, 64)
SIZES = ((97, 131), (320, 320), (64, 64))


def _backends():
    def marks(backend):
        if backend in ('onnxruntime', 'openvino') and importlib.util.find_spec(backend) is None:
            return [pytest.mark.skip(reason=f'{backend} not installed')]
        return [pytest.mark.slow] if backend == 'inductor' else []  # a compile per build: a minute or more
    return [pytest.param(b, marks=marks(b)) for b in BACKENDS]


@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    return randomize_batchnorm(timm.create_model('sknet_tiny', features_only=True)).eval()


def _matches_eager(optimized, model, h, w, batch=2):
    x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    with torch.inference_mode():
        ref = model(x)
    out = optimized(x)
    assert [tuple(t.shape) for t in as_list(out)] == [tuple(t.shape) for t in as_list(ref)]
    assert relative_error(out, ref) <= TOLERANCES['fp32'], (h, w)
    return out, ref


@pytest.mark.parametrize('backend', _backends())
def test_a_dynamic_build_serves_every_size_and_pickles(backbone, backend):
    optimized = optimize(backbone, backend, input_size=BUILT, dynamic_size=True)
    assert optimized.dynamic_size and 'dynamic_size' in repr(optimized)
    for h, w in SIZES:
        _matches_eager(optimized, backbone, h, w)
    _matches_eager(optimized, backbone, 75, 50, batch=1)
    if backend != 'inductor':  # (an inductor recipe compiles again when loaded: slow here, and tested elsewhere)
        _matches_eager(pickle.loads(pickle.dumps(optimized)), backbone, 97, 131)
    with pytest.raises(ValueError, match=r'takes inputs of shape \(N, 3, H, W\)'):
        optimized(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize('backend', _backends())
def test_a_static_build_refuses_another_size_on_every_backend_with_the_same_advice(backbone, backend):
    optimized = optimize(backbone, backend, input_size=BUILT)
    assert not optimized.dynamic_size
    for shape in ((1, 3, 97, 131), (2, 3, 64, 65), (2, 1, 64, 64)):
        with pytest.raises(ValueError, match=r'built for inputs of shape \(N, 3, 64, 64\).*dynamic_size=True'):
            optimized(torch.randn(*shape))
    _matches_eager(optimized, backbone, 64, 64)  # and still runs the size it was built for
    restored = pickle.loads(pickle.dumps(optimized)) if backend != 'inductor' else optimized
    with pytest.raises(ValueError, match='dynamic_size=True'):
        restored(torch.randn(1, 3, 97, 131))


@pytest.mark.parametrize('backend', [p for p in _backends() if p.values[0] in ('eager', 'onnxruntime')])
def test_the_feature_pyramid_optimizes_with_dynamic_sizes(backend):
    torch.manual_seed(0)
    fpn = randomize_batchnorm(sknet_fpn_backbone('sknet_tiny', out_channels=32)).eval()
    optimized = optimize(fpn, backend, input_size=BUILT, dynamic_size=True)
    for h, w in ((97, 131), (128, 96)):
        out, ref = _matches_eager(optimized, fpn, h, w)
        assert list(out) == list(ref)  # the same levels by the same names ('0' ... 'pool')
