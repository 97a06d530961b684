"""The suite does not depend on its caller: a part of it passes in a second pytest started with a user's settings
(timm-sknet's own variables, the Hub client's endpoint, cache, offline mode and token, XDG folders, thread counts).

tests/conftest.py removes the caller's settings in one place; this runs that conftest as a user would meet it.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from loopback_guard.sitecustomize import child_environment

REPO = Path(__file__).resolve().parents[1]
#: one test of each kind: a child process that reports its environment, downloads from the loopback Hub (and an
#: offline refusal), and the command line's parsers
PART = ('tests/test_env.py::test_hub_settings_and_variables_are_the_ones_it_started_with',
        'tests/test_hub_weights.py::test_first_download_loads_the_served_weights',
        'tests/test_hub_weights.py::test_offline_without_cache_fails_fast_and_says_what_to_do',
        'tests/test_messages.py::test_every_help_is_plain_text_and_shows_every_options_real_default')


@pytest.mark.slow  # a second pytest process that imports torch and timm and starts one more: 20-40 s
def test_a_part_of_the_suite_passes_whatever_the_caller_set(tmp_path):
    users = {
        'TIMM_SKNET_VENV_ROOT': '/nonexistent', 'TIMM_SKNET_AUTOLOAD': '0', 'TIMM_SKNET_SERVE_OPTIONS': '--port 1',
        'HF_HOME': str(tmp_path / 'hf'), 'HF_HUB_CACHE': str(tmp_path / 'hf' / 'hub'), 'HF_HUB_OFFLINE': '1',
        'HF_ENDPOINT': 'http://127.0.0.9:1',  # loopback, nothing listens: a test that used it would fail
        'HF_TOKEN': 'hf_not_a_token', 'XDG_CACHE_HOME': str(tmp_path / 'xdg'),
        'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *PART], cwd=REPO, capture_output=True,
        text=True, timeout=300, env=child_environment({**os.environ, **users}))  # loopback only, as this process
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f'{len(PART)} passed' in proc.stdout, proc.stdout[-2000:]
    assert not list((tmp_path / 'hf').rglob('*')) and not (tmp_path / 'xdg').exists()  # the caller's caches: untouched
