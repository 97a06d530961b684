"""The package as a user gets it: an sdist and wheels built from this checkout, installed into a site folder,
and fresh interpreters that see timm, torch, ... and that site folder, but never this checkout.

``run_python(site_dir, code)`` starts ``python -I -S``: no user site, no current folder on ``sys.path``, no
``site`` processing of the test environment (whose own editable install of timm-sknet would otherwise answer).
It then calls ``site.addsitedir(site_dir)``, which runs the folder's ``.pth`` files as interpreter start-up
does, and appends ``PYTHONPATH`` and the test environment's site-packages (without its ``.pth`` files) for
timm, torch and the rest. Whatever that process can do with sknet models, it owes to the installed distribution.

Import the fixtures into a test module with ``from installed_package import *``.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path
from typing import Dict, NamedTuple, Optional

import pytest

__all__ = ['Distributions', 'copy_sources', 'distributions', 'editable_site', 'run_python', 'wheel_site', 'REPO']

REPO = Path(__file__).resolve().parents[1]
#: what an sdist is made from (the rest of the checkout is tests, docs and tools)
_SOURCES = ('pyproject.toml', 'setup.py', 'MANIFEST.in', 'README.md', 'LICENSE', 'timm_sknet_autoload.py',
            'timm_sknet_autoload.pth', 'timm_sknet')
_BUILD = """
from setuptools import build_meta as backend
import sys
print(backend.{hook}(sys.argv[1]))
"""
_PRELUDE = """\
import site, sys
site.addsitedir({site_dir!r})
sys.path.extend({env_paths!r})
"""


class Distributions(NamedTuple):
    source: Path  # the unpacked sdist the wheels were built from (an editable install points here)
    sdist: Path
    wheel: Path
    editable: Path


def _backend(hook: str, source: Path, out: Path) -> Path:
    # setuptools runs the egg_info plugins of this environment (transformers' `kernels` registers one, which imports
    # huggingface_hub): they see the environment's own packages, not an overlay of older ones that
    # scripts/test_min_versions.sh puts on PYTHONPATH for the package under test
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run([sys.executable, '-c', _BUILD.format(hook=hook), str(out)], cwd=source,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / proc.stdout.strip().splitlines()[-1]


def copy_sources(dest: Path) -> Path:
    """Copy what an sdist is made from into ``dest`` (a clean checkout: no build outputs, no caches)."""
    for name in _SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def build_distributions(workdir: Path) -> Distributions:
    """sdist from a copy of the sources, then the wheel and the editable wheel from the unpacked sdist
    (as ``pip install`` from PyPI's sdist would): a file the sdist forgets is missing from the wheels too."""
    checkout, out = copy_sources(workdir / 'checkout'), workdir / 'dist'
    sdist = _backend('build_sdist', checkout, out)
    with tarfile.open(sdist) as tar:
        tar.extractall(workdir / 'unpacked', filter='data')
    unpacked = next((workdir / 'unpacked').iterdir())
    return Distributions(unpacked, sdist, _backend('build_wheel', unpacked, out), _backend('build_editable', unpacked, out))


def pip_install_target(wheel: Path, target: Path) -> Path:
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '--quiet',
                           '--target', str(target), str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def _environment_paths() -> list:
    """PYTHONPATH (``-I`` ignores it; CI's minimum-versions job overlays older timm / huggingface_hub there),
    then the test environment's site-packages."""
    overlays = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    return [*overlays, sysconfig.get_paths()['purelib']]


def run_python(site_dir: Path, code: str, *, env: Optional[Dict[str, Optional[str]]] = None,
               cwd: Optional[Path] = None, timeout: float = 300, args=()) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that sees ``site_dir`` (start-up files processed) and the test
    environment's packages, never this checkout. ``env`` adds variables (a value of None removes one)."""
    environ = {k: v for k, v in os.environ.items() if k != 'TIMM_SKNET_AUTOLOAD'}
    environ.update({'HF_HUB_OFFLINE': '1', 'HF_HUB_DISABLE_TELEMETRY': '1', 'PYTHONWARNINGS': 'default'})
    for key, value in (env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    prelude = _PRELUDE.format(site_dir=str(site_dir), env_paths=_environment_paths())
    return subprocess.run([sys.executable, '-I', '-S', *args, '-c', prelude + code], capture_output=True,
                          text=True, env=environ, cwd=cwd or site_dir.parent, timeout=timeout)


@pytest.fixture(scope='session')
def distributions(tmp_path_factory) -> Distributions:
    return build_distributions(tmp_path_factory.mktemp('build'))


@pytest.fixture(scope='session')
def wheel_site(distributions, tmp_path_factory) -> Path:
    """The wheel, installed by pip into an empty folder (``pip install --target``)."""
    return pip_install_target(distributions.wheel, tmp_path_factory.mktemp('wheel') / 'site-packages')


@pytest.fixture(scope='session')
def editable_site(distributions, tmp_path_factory) -> Path:
    """The editable wheel (what ``pip install -e`` installs), installed into an empty folder."""
    return pip_install_target(distributions.editable, tmp_path_factory.mktemp('editable') / 'site-packages')
