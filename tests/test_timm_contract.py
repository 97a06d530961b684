"""The contract timm's own tests/test_models.py checks for every model, written for the sknet family.

Full-size models are built on the meta device where only shapes matter; numerics use small inputs.
"""
import pytest
import torch
from helpers import randomize_batchnorm

import timm
from timm.models import get_graph_node_names
from timm.models._features_fx import create_feature_extractor

ALL = timm.list_models('sknet*')
SMALL = ['sknet18', 'sknet50']  # one per block type, for the numerical checks
X64 = (2, 3, 64, 64)


def test_registered_names_do_not_shadow_timm():
    assert sorted(ALL) == ['sknet101', 'sknet101_caffe', 'sknet152', 'sknet18', 'sknet34', 'sknet50', 'sknet50_caffe',
                           'sknet_tiny']
    assert set(timm.list_models(module='sknets')) == set(ALL)
    assert timm.list_models('skresnext50_32x4d') and timm.list_models(module='sknet')  # timm's own intact
    assert timm.list_pretrained('sknet*') == [
        'sknet18.ra_in1k', 'sknet34.ra_in1k', 'sknet50.ra_in1k', 'sknet_tiny.synthetic']


@pytest.mark.parametrize('name', ALL)
def test_default_cfg_on_meta(name):
    with torch.device('meta'):
        model = timm.create_model(name).eval()
        cfg = model.pretrained_cfg
        for key in ('input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std',
                    'first_conv', 'classifier', 'license', 'paper_ids', 'num_classes'):
            assert cfg.get(key) is not None, key
        x = torch.empty(1, *cfg['input_size'])
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features and tuple(feats.shape[-2:]) == tuple(cfg['pool_size'])
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
        assert model(x).shape == (1, cfg['num_classes'])
        state = model.state_dict()
        assert cfg['first_conv'] + '.weight' in state and cfg['classifier'] + '.weight' in state
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
        model.reset_classifier(0, '')
        assert tuple(model(x).shape[-2:]) == tuple(cfg['pool_size'])
        with pytest.raises(TypeError):
            timm.create_model(name, not_an_argument=1)


def test_user_kwargs_override_entrypoint_defaults():
    with torch.device('meta'):
        model = timm.create_model('sknet50', kernel_sizes=[3, 5, 7], reduction=8, num_classes=10)
    unit = model.layer1[0].conv2
    assert unit.num_paths == 3 and model.kernel_sizes == [3, 5, 7]
    assert unit.attn.fc_reduce.out_channels == 32  # max(128 / 8, 32)
    assert model.cardinality == 32 and model.base_width == 4 and model.num_classes == 10


@pytest.mark.parametrize('name', SMALL)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = timm.create_model(name, num_classes=5)
    model.train()
    out = model(torch.randn(*X64))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize('name', SMALL)
def test_torchscript_matches_eager(name):
    model = randomize_batchnorm(timm.create_model(name, num_classes=5)).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(*X64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)


def test_fx_trace_matches_eager():
    model = randomize_batchnorm(timm.create_model('sknet18', num_classes=5)).eval()
    train_nodes, eval_nodes = get_graph_node_names(model)
    extractor = create_feature_extractor(model, return_nodes=[eval_nodes[-1]]).eval()
    x = torch.randn(*X64)
    with torch.no_grad():
        torch.testing.assert_close(list(extractor(x).values())[0], model(x), rtol=1e-5, atol=1e-5)
    assert any('attn' in n for n in eval_nodes)  # the SK attention is traced, not a leaf


@pytest.mark.parametrize('name', ALL)
def test_features_only_matches_feature_info(name):
    with torch.device('meta'):
        model = timm.create_model(name, features_only=True).eval()
        feats = model(torch.empty(1, 3, 224, 224))
    assert len(feats) == 5
    for f, ch, red in zip(feats, model.feature_info.channels(), model.feature_info.reduction()):
        assert f.shape[1] == ch and f.shape[-1] == 224 // red


@pytest.mark.parametrize('name', SMALL)
def test_forward_intermediates_and_pruning(name):
    model = randomize_batchnorm(timm.create_model(name, num_classes=5)).eval()
    x = torch.randn(*X64)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [t.shape[1] for t in intermediates] == [f['num_chs'] for f in model.feature_info]
        torch.testing.assert_close(intermediates[-1], final)

        only = model.forward_intermediates(x, indices=(1, 2), intermediates_only=True)
        kept = model.prune_intermediate_layers(indices=(1, 2))
        assert list(kept) == [1, 2]
        assert len(model.layer3) == 0 and len(model.layer4) == 0  # pruned stages become empty
        pruned = model.forward_intermediates(x, indices=(1, 2), intermediates_only=True)
    for a, b in zip(only, pruned):
        torch.testing.assert_close(a, b)


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    a = timm.create_model('sknet18', num_classes=5)
    b = timm.create_model('sknet18', num_classes=5)
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = torch.randn(*X64)
    for m in (a, b):
        m.train()
        m(x).sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_group_matcher_covers_every_parameter():
    from timm.models import group_parameters
    model = timm.create_model('sknet18')
    groups = group_parameters(model, model.group_matcher())
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
