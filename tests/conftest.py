"""Shared test setup: deterministic seeds and a guard that no test reaches a host other than loopback."""
import os

import pytest

# The Hub client reads these once at import; make sure no test can talk to the real Hub.
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')
os.environ.setdefault('HF_HUB_DISABLE_IMPLICIT_TOKEN', '1')

import torch  # noqa: E402
from loopback_guard import sitecustomize as loopback_guard  # noqa: E402

import timm_sknet  # noqa: E402,F401  (registers the models before timm lookups)

loopback_guard.install()  # for the whole session: imports and fixtures too


@pytest.fixture(autouse=True)
def _no_outside_network():
    """Fail a test that tried to reach any host but loopback, even if the code under test swallowed the refusal."""
    del loopback_guard.attempts[:]
    yield
    tried = list(loopback_guard.attempts)
    del loopback_guard.attempts[:]
    assert not tried, f'the test tried to reach hosts other than loopback: {tried}'


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
