"""Training a backbone the way detectors do: frozen BatchNorm, batch size 1, gradient checkpointing."""
import copy

import pytest
import torch
from helpers import randomize_batchnorm as randomise_batchnorm
from torch import nn

import timm
from timm.layers import freeze_batch_norm_2d
from timm.layers.norm_act import FrozenBatchNorm2d, FrozenBatchNormAct2d

from timm_sknet import SelectiveKernel, SelectiveKernelAttn

X32 = (3, 32, 32)


def test_freeze_batch_norm_reaches_the_sk_attention_and_paths():
    model = timm.create_model('sknet18', features_only=True)
    n_attn = sum(isinstance(m, SelectiveKernelAttn) for m in model.modules())
    n_paths = sum(len(m.paths) for m in model.modules() if isinstance(m, SelectiveKernel))
    model = freeze_batch_norm_2d(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    attn = [m for m in model.modules() if isinstance(m, SelectiveKernelAttn)]
    assert len(attn) == n_attn == 8 and all(isinstance(m.bn, FrozenBatchNorm2d) for m in attn)
    paths = [p for m in model.modules() if isinstance(m, SelectiveKernel) for p in m.paths]
    assert len(paths) == n_paths == 16 and all(isinstance(p.bn, FrozenBatchNormAct2d) for p in paths)


def test_frozen_batch_norm_trains_at_batch_size_1():
    """Frozen BN normalises with the running statistics: train mode at batch 1 equals eval mode."""
    model = randomise_batchnorm(timm.create_model('sknet18', features_only=True))
    x = torch.randn(1, *X32)
    with torch.no_grad():
        expected = model.eval()(x)
    frozen = freeze_batch_norm_2d(model).train()
    features = frozen(x)
    for a, b in zip(features, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    sum(f.square().mean() for f in features).backward()
    attn_fc = [m.fc_reduce.weight for m in frozen.modules() if isinstance(m, SelectiveKernelAttn)]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in attn_fc)


@pytest.mark.parametrize('feature_cls', ['list', 'fx'])
def test_batch_size_1_in_train_mode_says_what_to_do(feature_cls):
    model = timm.create_model('sknet18', features_only=True, feature_cls=feature_cls).train()
    with pytest.raises(ValueError) as info:
        model(torch.randn(1, *X32))
    message = str(info.value)
    assert 'batch size 1' in message and 'model.eval()' in message
    assert 'timm.layers.freeze_batch_norm_2d' in message and 'batch size >= 2' in message
    assert 'Expected more than 1 value per channel' not in message
    # the check gets in the way of nothing else: eval at batch 1, train at batch 2
    model.eval()(torch.randn(1, *X32))
    model.train()(torch.randn(2, *X32))


@pytest.mark.filterwarnings('ignore:.*torch.jit.script.* is deprecated:FutureWarning')
@pytest.mark.filterwarnings('ignore:The TorchScript type system:UserWarning')  # torch's, scripting a GraphModule
def test_scripting_and_fx_tracing_keep_working():
    model = timm.create_model('sknet18').eval()
    x = torch.randn(2, *X32)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), expected)
        torch.testing.assert_close(torch.jit.script(traced)(x), expected)  # the check node scripts too
    # the check is one graph node, evaluated when the graph runs
    assert any(n.op == 'call_function' and n.target.__name__ == '_check_batch_statistics'
               for n in traced.graph.nodes)


def _sk_forward_counter(model: nn.Module):
    """Counts SK unit forward calls; gradient checkpointing recomputes them during backward."""
    calls = [0]

    def hook(*_):
        calls[0] += 1
    for m in model.modules():
        if isinstance(m, SelectiveKernel):
            m.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize('feature_cls', ['list', 'dict', 'hook', 'getter'])
def test_grad_checkpointing_in_features_only_mode(feature_cls):
    torch.manual_seed(0)
    plain = randomise_batchnorm(timm.create_model('sknet18', features_only=True, feature_cls=feature_cls)).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    x = torch.randn(2, *X32)
    grads, counts = [], []
    for model in (plain, ckpt):
        calls = _sk_forward_counter(model)
        features = model(x)
        features = features.values() if isinstance(features, dict) else features
        sum((f * torch.linspace(0, 1, f.numel()).view_as(f)).sum() for f in features).backward()
        counts.append(calls[0])
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert counts[0] == 8 and counts[1] > counts[0], 'checkpointing must recompute SK units in backward'
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_grad_checkpointing_refused_clearly_for_fx_features():
    model = timm.create_model('sknet18', features_only=True, feature_cls='fx')
    model.set_grad_checkpointing(False)  # disabling is always fine
    with pytest.raises(NotImplementedError, match="feature_cls='list'"):
        model.set_grad_checkpointing()


def test_feature_cls_inside_feature_cfg_is_honoured():
    model = timm.create_model('sknet18', features_only=True, feature_cfg=dict(feature_cls='fx'))
    with pytest.raises(NotImplementedError):
        model.set_grad_checkpointing()
    getter = timm.create_model('sknet18', features_only=True, feature_cfg=dict(feature_cls='getter'))
    getter.set_grad_checkpointing()
    assert getter.model.grad_checkpointing
