"""The package type-checks, and a user's type checker sees its annotations: mypy, configured in pyproject.toml
(no blanket ignores: untyped third-party modules are named one by one), finds nothing in timm_sknet."""
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.checks

REPO = Path(__file__).resolve().parents[1]


def _mypy(*args: str) -> subprocess.CompletedProcess:
    # the cache lives with the environment (sys.prefix: the cached venv), so a fresh clone does not start cold;
    # mypy checks every cached module against its source before it trusts it
    cache = Path(sys.prefix) / 'mypy-cache'
    return subprocess.run([sys.executable, '-m', 'mypy', '--cache-dir', str(cache), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_mypy_finds_nothing():
    proc = _mypy()
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_mypy_sees_the_packages_types(tmp_path):
    """A wrong use of the API is an error, not Any: the package's annotations reach its users."""
    user = tmp_path / 'user_code.py'
    user.write_text('from timm_sknet.inference import TOLERANCES, optimize\n'
                    'tolerance: str = TOLERANCES["fp32"]\n'
                    'optimize(model=3)\n')
    proc = _mypy(str(user))
    assert proc.returncode == 1, proc.stdout
    assert 'user_code.py:2: error: Incompatible types in assignment' in proc.stdout
    assert 'user_code.py:3: error: Argument "model" to "optimize" has incompatible type "int"' in proc.stdout


def test_no_blanket_ignores():
    config = tomllib.loads((REPO / 'pyproject.toml').read_text())['tool']['mypy']
    assert not {'ignore_missing_imports', 'ignore_errors', 'follow_imports'} & set(config)
    assert config['disallow_untyped_defs'] and 'ignore-without-code' in config['enable_error_code']
    for override in config['overrides']:
        assert set(override) == {'module', 'ignore_missing_imports'}
        assert not any(m.startswith('timm_sknet') or m in ('torch', 'timm', 'huggingface_hub') for m in override['module'])
