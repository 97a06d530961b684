"""Exactness of the select step and of BN folding through timm's reparameterize_model.

References are independent: the paper's stacked softmax formula, and the unfused model (itself checked
against timm's implementation with the same weights elsewhere). BatchNorm statistics are randomised so
that folding is never a no-op.
"""
import copy

import pytest
import torch
from helpers import randomize_batchnorm as randomize_bn
from small_models import CONFIGS, RTOL, make, rel_err
from torch import nn

import timm
from timm.utils import reparameterize_model

import timm_sknet.layers.conv_norm_act as conv_norm_act_module
import timm_sknet.layers.selective_kernel as selective_kernel_module
import timm_sknet.models.sknets as sknets_module
from timm_sknet import SelectiveKernel, SelectiveKernelAttn, select_paths
from timm_sknet.inference import fuse_model
from timm_sknet.layers import fold_batchnorm, is_batchnorm, unfused_batchnorms

# --- select step -------------------------------------------------------------------------------

def stacked_select(paths, logits):
    """The paper's formula, literally: softmax over M of the logits, weighted sum of the stacked paths."""
    b, m = logits.shape[0], len(paths)
    w = logits.reshape(b, m, -1, 1, 1).softmax(dim=1)
    return (torch.stack(paths, dim=1) * w).sum(dim=1)


@pytest.mark.parametrize('num_paths', [2, 3])
def test_select_paths_matches_stacked_formula_forward_and_backward(num_paths):
    g = torch.Generator().manual_seed(num_paths)
    paths = [torch.randn(2, 8, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
             for _ in range(num_paths)]
    logits = torch.randn(2, num_paths * 8, 1, 1, generator=g, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 8, 5, 5, generator=g, dtype=torch.float64)

    weights = logits.reshape(2, num_paths, -1, 1, 1).softmax(dim=1)
    ours = select_paths(paths, weights)
    ref = stacked_select(paths, logits)
    assert (ours - ref).abs().max() < 1e-6
    grads = torch.autograd.grad(ours, paths + [logits], grad_out)
    ref_grads = torch.autograd.grad(ref, paths + [logits], grad_out)
    for a, b in zip(grads, ref_grads):
        assert (a - b).abs().max() < 1e-6


@pytest.mark.parametrize('kernel_sizes', [(3, 5), (3, 5, 7)])
def test_sk_unit_training_mode_matches_stacked_formula(kernel_sizes):
    """Whole unit in training mode (batch statistics): output and every gradient. float64, because BN
    over a batch of two 1x1 maps amplifies float32 rounding of any reordered sum beyond 1e-6."""
    unit = SelectiveKernel(16, 16, kernel_sizes=kernel_sizes, stride=2, groups=4, attn_channels=8)
    unit = unit.double().train()
    x = torch.randn(2, 16, 12, 12, dtype=torch.float64, requires_grad=True)

    def reference(x):
        paths = [p(x) for p in unit.paths]
        a = unit.attn
        z = a.act(a.bn(a.fc_reduce(torch.stack(paths, 1).sum(1).mean((2, 3), keepdim=True))))
        return stacked_select(paths, a.fc_select(z))

    state = copy.deepcopy(unit.state_dict())
    out = unit(x)
    grads = torch.autograd.grad(out.square().sum(), [x] + list(unit.parameters()))
    unit.load_state_dict(state)  # undo the running-stat update before the reference pass
    ref = reference(x)
    ref_grads = torch.autograd.grad(ref.square().sum(), [x] + list(unit.parameters()))
    assert (out - ref).abs().max() < 1e-6
    for a, b in zip(grads, ref_grads):
        assert (a - b).abs().max() < 1e-6


# --- BN folding --------------------------------------------------------------------------------

@pytest.mark.parametrize('name', list(CONFIGS))
def test_fuse_model_folds_every_batchnorm_exactly(name):
    model = make(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    fused = fuse_model(model)

    assert unfused_batchnorms(fused) == []
    assert unfused_batchnorms(model), 'the original keeps its BatchNorms'
    assert [type(m) for m in model.modules()] == types
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    assert rel_err(out, ref) < RTOL


@pytest.mark.parametrize('name', ['sknet18', 'sknet50-deep-avgdown-os8'])
def test_timms_walk_folds_everything_below_the_root_and_reaches_the_stem_through_a_parent(name):
    """timm's reparameterize_model visits children only: on a bare model it leaves the stem's BatchNorms
    (the root's own), exactly; with the model as a child (any wrapper) it folds all of them."""
    model = make(name)
    stem_bns = [n for n in unfused_batchnorms(model) if n == 'bn1' or n.startswith('conv1.')]
    assert stem_bns
    walked = reparameterize_model(model)
    assert unfused_batchnorms(walked) == stem_bns
    wrapped = reparameterize_model(nn.Sequential(model))
    assert unfused_batchnorms(wrapped) == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        assert rel_err(walked(x), ref) < RTOL and rel_err(wrapped(x), ref) < RTOL


@pytest.mark.parametrize('name', ['sknet18', 'sknet50-M3-os16', 'sknet50-deep-avgdown-os8'])
def test_every_batchnorm_is_folded_exactly_once(name, monkeypatch):
    """Each module folds only its own parts, so one walk folds each BatchNorm once (no unit twice)."""
    folded = []

    def counting_fold(conv, bn):
        folded.append(bn)
        return fold_batchnorm(conv, bn)
    for module in (conv_norm_act_module, selective_kernel_module, sknets_module):
        monkeypatch.setattr(module, 'fold_batchnorm', counting_fold)
    model = make(name)
    bns = [m for m in model.modules() if is_batchnorm(m)]
    fuse_model(model, inplace=True)
    assert len(folded) == len(bns)
    assert {id(bn) for bn in folded} == {id(bn) for bn in bns}


def test_unfused_keys_are_timms():
    """The stem helper adds no state: timm's checkpoint of skresnet18 loads strictly."""
    ours = timm.create_model('sknet18')
    theirs = timm.create_model('skresnet18')
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)


def test_attention_hook_sees_selection_weights_after_fusion():
    model = make('sknet50-M3-os16')
    fused = reparameterize_model(model)

    def record(m):
        seen = []
        for mod in m.modules():
            if isinstance(mod, SelectiveKernelAttn):
                mod.register_forward_hook(lambda _m, _i, out: seen.append(out))
        return seen

    a, b = record(model), record(fused)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model(x), fused(x)
    assert len(a) == len(b) == 4
    for wa, wb in zip(a, b):
        assert wb.shape == wa.shape and wb.shape[1:3] == (3, wa.shape[2]) and wb.shape[3:] == (1, 1)
        assert torch.allclose(wb.sum(1), torch.ones(()), atol=1e-6)
        assert (wa - wb).abs().max() < 1e-5


def test_fused_model_forward_intermediates_and_features():
    model = make('sknet50-deep-avgdown-os8')
    fused = fuse_model(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model.forward_intermediates(x, indices=5, intermediates_only=True)
        out = fused.forward_intermediates(x, indices=5, intermediates_only=True)
    assert len(ref) == len(out) == 5
    for a, b in zip(out, ref):
        assert rel_err(a, b) < RTOL

    arch, kwargs = CONFIGS['sknet18']
    feats = randomize_bn(timm.create_model(arch, features_only=True, **kwargs)).eval()
    feats_fused = fuse_model(feats)
    assert not any(isinstance(m, SelectiveKernel) and unfused_batchnorms(m) for m in feats_fused.modules())
    with torch.no_grad():
        for a, b in zip(feats_fused(x), feats(x)):
            assert rel_err(a, b) < RTOL


def test_fold_batchnorm_cases():
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=True)
    bn = randomize_bn(nn.Sequential(nn.BatchNorm2d(6)))[0].eval()
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        assert rel_err(fold_batchnorm(conv, bn)(x), bn(conv(x))) < 1e-6
    with pytest.raises(ValueError, match='running statistics'):
        fold_batchnorm(conv, nn.BatchNorm2d(6, track_running_stats=False))
    with pytest.raises(ValueError, match='6 outputs'):
        fold_batchnorm(conv, nn.BatchNorm2d(5))


@pytest.mark.parametrize('name', ['sknet18', 'sknet50-M3-os16'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_fused_model_agrees_with_and_without_autograd(name, channels_last):
    """The fused model, under inference_mode and with autograd on, equals the unfused model in either layout."""
    model = make(name)
    fused = fuse_model(model)
    x = torch.randn(2, 3, 64, 64)
    if channels_last:
        model, fused = (m.to(memory_format=torch.channels_last) for m in (model, fused))
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x)
    with torch.inference_mode():
        fast = fused(x)
    slow = fused(x)
    assert slow.requires_grad
    assert rel_err(fast, ref) < RTOL and rel_err(slow.detach(), ref) < RTOL


def test_gradients_through_a_fused_model_equal_the_plain_models():
    """A fused model used with autograd (saliency maps, fine-tuning after fusing) must not select in place into
    tensors that backward needs: the input gradient equals the plain model's."""
    model = make('sknet50-M3-os16')
    fused = fuse_model(model)
    grads = []
    for m in (model, fused):
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), requires_grad=True)
        m(x).logsumexp(1).sum().backward()
        grads.append(x.grad)
    assert rel_err(grads[1], grads[0]) < RTOL


def test_fused_models_run_under_cpu_bf16_autocast():
    """Under autocast the select step casts the float32 softmax weights to the paths' bf16 (it used to crash)."""
    model = make('sknet50-M3-os16').to(memory_format=torch.channels_last)
    fused = fuse_model(model)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = fused(x)
    assert out.dtype == torch.bfloat16
    assert rel_err(out.float(), ref) < 5e-2


@pytest.mark.parametrize('num_paths', [2, 3])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_select_paths_takes_float32_weights_for_half_precision_paths(num_paths, dtype):
    """CUDA autocast runs softmax in float32 and convolutions in fp16/bf16: select must mix the two."""
    paths = [torch.randn(2, 8, 5, 5) for _ in range(num_paths)]
    weights = torch.randn(2, num_paths, 8, 1, 1).softmax(1)
    ref = stacked_select(paths, torch.log(weights).reshape(2, -1, 1, 1))
    out = select_paths([p.to(dtype) for p in paths], weights)
    assert out.dtype == dtype and rel_err(out.float(), ref) < 1e-2
