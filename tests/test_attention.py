"""``record_sk_attention``: what it records is the paper's selection weights, and it leaves no hook behind."""
import copy

import pytest
import torch
from helpers import randomize_batchnorm

import timm

from timm_sknet.analysis.attention import find_sk_units, record_sk_attention
from timm_sknet.inference import fuse_model


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return randomize_batchnorm(timm.create_model('sknet18', num_classes=10), seed=1).eval()


@pytest.fixture(scope='module')
def x():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def _unit_of(model, attn_path: str):
    return model.get_submodule(attn_path.rpartition('.')[0])


def _manual_weights(attn, path_outputs):
    """Eq. 3-5 of the paper from the parameters alone: U = sum of paths, s = mean(U), z = relu(bn(W_r s)),
    a_m = softmax over paths of W_select z (the rows of paths m)."""
    u = torch.stack(path_outputs).sum(0)
    s = u.mean((2, 3))                                                     # (B, C)
    z = s @ attn.fc_reduce.weight.flatten(1).t()
    bn = attn.bn
    z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    z = z.clamp_min(0)
    logits = z @ attn.fc_select.weight.flatten(1).t()                      # (B, M * C)
    return logits.reshape(s.shape[0], attn.num_paths, -1).softmax(dim=1)   # (B, M, C)


def test_recorded_weights_sum_to_one_and_match_a_manual_computation(model, x):
    units = find_sk_units(model)
    assert len(units) == 8  # sknet18: one SK unit in each of 2 x 4 basic blocks
    path_outputs = {name: [] for name in units}
    handles = []
    for name, (info, _) in units.items():
        for path in _unit_of(model, info.module_path).paths:
            handles.append(path.register_forward_hook(
                lambda m, i, out, name=name: path_outputs[name].append(out.detach().clone())))
    try:
        with record_sk_attention(model) as rec, torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    for name, (info, attn) in units.items():
        w = rec[name]
        assert w.shape == (2, info.num_paths, attn.fc_select.out_channels // info.num_paths)
        assert torch.allclose(w.sum(dim=1), torch.ones(()), atol=1e-6)
        assert (w >= 0).all()
        with torch.no_grad():
            manual = _manual_weights(attn, path_outputs[name])
        torch.testing.assert_close(w, manual, rtol=1e-5, atol=1e-6)
        # the weights are not trivially uniform: the test would catch a constant
        assert (w - 0.5).abs().max() > 1e-3


def _hook_counts(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_after_the_block_and_after_an_exception(model, x):
    assert _hook_counts(model) == 0
    with record_sk_attention(model) as rec:
        assert _hook_counts(model) == len(rec) == 8
        with torch.no_grad():
            model(x)
    assert _hook_counts(model) == 0
    with pytest.raises(ZeroDivisionError):
        with record_sk_attention(model):
            1 / 0
    assert _hook_counts(model) == 0
    # and nothing is recorded outside the block
    with torch.no_grad():
        model(x)
    assert rec.num_calls('SK_2_1') == 1


def test_several_batches_are_concatenated(model, x):
    with record_sk_attention(model) as rec, torch.no_grad():
        model(x)
        model(x[:1])
    assert rec['SK_3_2'].shape[0] == 3
    torch.testing.assert_close(rec['SK_3_2'][2], rec['SK_3_2'][0])


def test_fused_model_records_the_same_weights(model, x):
    fused = fuse_model(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())  # really fused
    with torch.no_grad(), record_sk_attention(model) as plain_rec:
        model(x)
    with torch.no_grad(), record_sk_attention(fused) as fused_rec:
        fused(x)
    assert fused_rec.keys() == plain_rec.keys()
    for name in plain_rec:
        torch.testing.assert_close(fused_rec[name], plain_rec[name], rtol=0, atol=1e-5)
    assert _hook_counts(fused) == 0


def test_a_model_without_sk_units_is_refused():
    with pytest.raises(ValueError, match='no SK unit'):
        record_sk_attention(timm.create_model('resnet10t'))


def test_units_are_named_by_the_papers_stage_with_the_stem_as_stage_1(model):
    """Fig. 3 of the paper: conv1 is stage 1, so timm's layer1 holds SK[2, 1] ... and layer4 SK[5, *]."""
    with record_sk_attention(model) as rec:
        units = dict(rec.units)
    expected = {f'SK_{i + 1}_{j + 1}': f'layer{i}.{j}.conv1.attn'
                for i in range(1, 5) for j in range(len(getattr(model, f'layer{i}')))}
    assert {name: u.module_path for name, u in units.items()} == expected
    assert all((u.stage, u.block) == (int(n.split('_')[1]), int(n.split('_')[2])) for n, u in units.items())
