"""hubconf.py: torch.hub sees one entrypoint per registered model, and they load verified Hub weights."""
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from hub_fixtures import *  # noqa: F401,F403  (fixtures)
from hub_fixtures import SKNET50_REPO

import timm

from timm_sknet import WeightsError

REPO_DIR = str(Path(__file__).resolve().parents[1])


def _our_models():
    return sorted(n for n in timm.list_models()
                  if timm.models.model_entrypoint(n).__module__.startswith('timm_sknet'))


def _import_hubconf():
    spec = importlib.util.spec_from_file_location('hubconf_under_test', os.path.join(REPO_DIR, 'hubconf.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def hub_dir(tmp_path):
    """A torch.hub cache that already holds this checkout as the GitHub repo 'owner/timm-sknet' at 'main'."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'torch-hub'))
    os.makedirs(torch.hub.get_dir())
    os.symlink(REPO_DIR, os.path.join(torch.hub.get_dir(), 'owner_timm-sknet_main'))
    try:
        yield torch.hub.get_dir()
    finally:
        torch.hub.set_dir(previous)


def test_hub_list_shows_exactly_the_registered_models(hub_dir):
    entrypoints = torch.hub.list('owner/timm-sknet:main', trust_repo=True, skip_validation=True, verbose=False)
    assert sorted(entrypoints) == _our_models()
    assert {'sknet18', 'sknet34', 'sknet50', 'sknet101', 'sknet152'} <= set(entrypoints)


def test_every_entrypoint_has_a_docstring_naming_its_weights(hub_dir):
    module = _import_hubconf()
    for name in _our_models():
        doc = torch.hub.help('owner/timm-sknet:main', name, trust_repo=True, skip_validation=True)
        assert doc and 'Pretrained weights:' in doc and 'timm.create_model' in doc, name
    assert 'sknet50.ra_in1k' in module.sknet50.__doc__
    assert 'none exist' in module.sknet101.__doc__
    assert module.dependencies == ['torch', 'timm', 'huggingface_hub', 'safetensors']


def test_local_hub_load_sknet50_pretrained_num_classes(local_hub, sknet50_full):
    local_hub.add_commit(SKNET50_REPO, {'model.safetensors': sknet50_full.data})
    model = torch.hub.load(REPO_DIR, 'sknet50', source='local', pretrained=True, num_classes=10)
    assert model.num_classes == 10 and model.fc.out_features == 10
    served = sknet50_full.state_dict
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in served.items() if not k.startswith('fc.'))
    # Independent reference: the served tensors loaded by plain torch into timm's own SKNet-50.
    ref = timm.create_model('skresnext50_32x4d', num_classes=0).eval()
    ref.load_state_dict({k: v for k, v in served.items() if not k.startswith('fc.')})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_features(x), ref.forward_features(x), rtol=0, atol=1e-5)
    assert local_hub.count('GET', 'model.safetensors') == 1


def test_github_style_load_passes_all_kwargs(hub_dir, local_hub, sknet50_full):
    """'owner/timm-sknet:main' as torch.hub users write it (served from the torch.hub cache, not GitHub)."""
    local_hub.add_commit(SKNET50_REPO, {'model.safetensors': sknet50_full.data})
    features = torch.hub.load('owner/timm-sknet:main', 'sknet50', pretrained=True, features_only=True,
                              out_indices=(1, 3), trust_repo=True, skip_validation=True, verbose=False)
    assert features.feature_info.channels() == [256, 1024]
    assert torch.equal(features.conv1.weight, sknet50_full.state_dict['conv1.weight'])


@pytest.mark.parametrize('fault, what', [('expired', 'HTTP 403'), ('corrupt', 'integrity check failed')])
def test_torch_hub_load_turns_hub_failures_into_weights_error(fault, what, local_hub, hf_cache):
    """torch.hub's entrypoints go through the same verified download: one WeightsError, nothing cached."""
    local_hub.add_commit(SKNET50_REPO, {'model.safetensors': b'\0' * 4096})  # never loaded: each fault stops it
    local_hub.fault = fault
    with pytest.raises(WeightsError) as info:
        torch.hub.load(REPO_DIR, 'sknet50', source='local', pretrained=True)
    msg = str(info.value)
    assert all(part in msg for part in ('sknet50.ra_in1k', f"repo '{SKNET50_REPO}'", what)), msg
    assert not list(hf_cache.rglob('blobs/*'))
