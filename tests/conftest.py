"""Shared test setup: an environment that is the suite's, not its caller's; deterministic seeds; and a guard that no
test reaches a host other than loopback."""
import os

import pytest
from left_out import LEFT_OUT  # noqa: F401  (reads TIMM_SKNET_TESTS_WITHOUT, the suite's own setting, first)

#: Variables of the caller that change what the code under test does (timm-sknet's own settings, the Hub client's
#: endpoint, cache, offline mode and token, XDG cache folders): the suite runs without them, as on a fresh machine,
#: whatever the caller set. Removed here, before torch, huggingface_hub or timm_sknet is imported (they read
#: some at import), and so also from every child process the tests start. Thread counts (OMP_NUM_THREADS, ...)
#: stay: they change how fast the suite runs, never what it checks.
CALLERS_SETTINGS = ('TIMM_SKNET_', 'HF_', 'XDG_')
for _name in [name for name in os.environ if name.startswith(CALLERS_SETTINGS)]:
    del os.environ[_name]
# The Hub client reads these once at import; make sure no test can talk to the real Hub.
os.environ['HF_HUB_DISABLE_TELEMETRY'] = '1'
os.environ['HF_HUB_DISABLE_IMPLICIT_TOKEN'] = '1'

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
