"""Parameter and MAC counts against the paper and timm (torch.utils.flop_counter, 224x224, on meta)."""
import pytest

import timm

from timm_sknet.models.complexity import count_macs, count_params, measure

# name: (params in M, GMACs) from the issue / the paper / timm's models measured the same way
EXPECTED = {
    'sknet50': (27.48, 4.463),    # paper: 27.5M, 4.47
    'sknet101': (48.74, 8.449),   # paper: 48.9M, 8.46
    'sknet18': (11.96, 1.814),
    'sknet34': (22.28, 3.664),
    'sknet50_caffe': (27.48, 4.463),   # the authors' Caffe models (stem pooling: same size at 224)
    'sknet101_caffe': (48.69, 8.449),  # d = 16 in stage 2: 49,280 parameters fewer than sknet101
}
PAPER = {'sknet50': (27.5, 4.47), 'sknet101': (48.9, 8.46), 'sknet50_caffe': (27.5, 4.47),
         'sknet101_caffe': (48.9, 8.46)}


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_size(name):
    params, macs = measure(name)
    want_params, want_gmacs = EXPECTED[name]
    assert abs(params / 1e6 - want_params) / want_params < 0.005
    assert abs(macs / 1e9 - want_gmacs) / want_gmacs < 0.01
    if name in PAPER:
        paper_params, paper_gmacs = PAPER[name]
        assert abs(params / 1e6 - paper_params) / paper_params < 0.005
        assert abs(macs / 1e9 - paper_gmacs) / paper_gmacs < 0.01


@pytest.mark.parametrize('ours, theirs', [('sknet18', 'skresnet18'), ('sknet50', 'skresnext50_32x4d')])
def test_same_cost_as_timm(ours, theirs):
    import torch
    with torch.device('meta'):
        reference = timm.create_model(theirs)
    assert measure(ours) == (count_params(reference), count_macs(reference))


def test_sknet152_is_deeper_than_101():
    p101, m101 = measure('sknet101')
    p152, m152 = measure('sknet152')
    assert 66.0e6 < p152 < 66.6e6 and m152 > m101 * 1.4
