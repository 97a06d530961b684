"""Fixtures for tests of Hub downloads: a local Hub (127.0.0.1, its CDN on 127.0.0.2) that huggingface_hub talks
to, a fresh HF cache per test, weights made by the tests, and the environment of a child process that loads
from them. Import the fixtures into a test module with ``from hub_fixtures import *``.
"""
import os
import socket
from pathlib import Path
from typing import Dict, NamedTuple

import pytest
import torch
from huggingface_hub import constants as hf_constants
from local_hub import LocalHub
from loopback_guard import sitecustomize as loopback_guard
from safetensors.torch import save as safetensors_bytes

import timm

__all__ = [
    'ServedWeights', 'hf_cache', 'local_hub', 'point_hub_client_at', 'sknet18_full', 'sknet18_small', 'sknet50_full',
    'dead_endpoint', 'child_env', 'REPO_ROOT', 'SMALL', 'SKNET18_REPO', 'SKNET50_REPO',
    'load_small_sknet18', 'assert_served_weights',
]

REPO_ROOT = Path(__file__).resolve().parents[1]

# A reduced sknet18 (one block per stage) keeps the served file at 22 MB; it loads through the real
# default cfg of sknet18.ra_in1k because `layers` is an ordinary create_model argument.
SMALL = dict(layers=(1, 1, 1, 1))
SKNET18_REPO = 'timm/skresnet18.ra_in1k'
SKNET50_REPO = 'timm/skresnext50_32x4d.ra_in1k'


class ServedWeights(NamedTuple):
    state_dict: Dict[str, torch.Tensor]
    data: bytes


def load_small_sknet18(**kwargs) -> torch.nn.Module:
    """``sknet18`` (one block per stage) with ``pretrained=True``: its weights come through the Hub path."""
    return timm.create_model('sknet18', pretrained=True, **SMALL, **kwargs)


def assert_served_weights(model: torch.nn.Module, weights: ServedWeights) -> None:
    """``model`` holds exactly the served tensors, name for name."""
    sd = model.state_dict()
    assert sd.keys() == weights.state_dict.keys()
    for k, v in weights.state_dict.items():
        assert torch.equal(sd[k], v), k


def _make(name: str, seed: int, **kwargs) -> ServedWeights:
    torch.manual_seed(seed)
    model = timm.create_model(name, **kwargs)
    # Random running stats, so that a BatchNorm buffer that failed to load would show in the outputs.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return ServedWeights(sd, safetensors_bytes(sd))


@pytest.fixture(scope='session')
def sknet18_small() -> ServedWeights:
    return _make('sknet18', seed=18, **SMALL)


@pytest.fixture(scope='session')
def sknet18_full() -> ServedWeights:
    return _make('sknet18', seed=18)


@pytest.fixture(scope='session')
def sknet50_full() -> ServedWeights:
    return _make('sknet50', seed=50)


def point_hub_client_at(monkeypatch, endpoint: str) -> None:
    """huggingface_hub reads HF_ENDPOINT once at import: patch the constants it formats URLs from."""
    monkeypatch.setattr(hf_constants, 'ENDPOINT', endpoint)
    monkeypatch.setattr(hf_constants, 'HUGGINGFACE_CO_URL_TEMPLATE', endpoint + '/{repo_id}/resolve/{revision}/{filename}')


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A fresh, empty Hugging Face cache for this test, online mode."""
    cache = tmp_path / 'hf-cache'
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    return cache


@pytest.fixture
def local_hub(monkeypatch, hf_cache):
    hub = LocalHub().start()
    point_hub_client_at(monkeypatch, hub.endpoint)
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def dead_endpoint(monkeypatch, hf_cache):
    """An endpoint on loopback where nothing listens (connection refused), like a machine without network."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    endpoint = f'http://127.0.0.1:{port}'
    point_hub_client_at(monkeypatch, endpoint)
    return endpoint


def child_env(endpoint: str, cache: Path, **extra: str) -> Dict[str, str]:
    """Environment of a child Python process that loads from ``endpoint`` into ``cache``, importing this checkout.

    huggingface_hub reads HF_ENDPOINT and HF_HUB_CACHE at import, so a fresh process is pointed at the local Hub
    by its environment alone; PYTHONPATH puts this checkout first (the shared venv may link another one).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'TIMM_SKNET_'))}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_TELEMETRY='1',
               HF_HUB_DISABLE_IMPLICIT_TOKEN='1', HF_HUB_DISABLE_PROGRESS_BARS='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get('PYTHONPATH', '')]).rstrip(os.pathsep),
               PYTHONUNBUFFERED='1', **extra)
    return loopback_guard.child_environment(env)
