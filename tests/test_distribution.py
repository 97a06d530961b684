"""Ready to publish: ``python -m build`` makes an sdist and a wheel that ``twine check --strict`` accepts, and the
wheel's metadata says what pyproject.toml, the package and the changelog say."""
import email
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from installed_package import REPO, copy_sources

import timm_sknet

pytestmark = pytest.mark.checks  # scripts/check.sh dist


@pytest.fixture(scope='module')
def dist(tmp_path_factory) -> Path:
    """scripts/build_dists.sh (the release workflow's build: sdist, the wheel from the sdist, ``twine check
    --strict``) on a clean copy of the sources, offline (``--no-isolation``: the environment's setuptools)."""
    source, out = copy_sources(tmp_path_factory.mktemp('source')), tmp_path_factory.mktemp('dist')
    env = {**os.environ, 'BUILD_ARGS': '--no-isolation', 'PATH': f'{Path(sys.executable).parent}:{os.environ["PATH"]}'}
    proc = subprocess.run(['bash', str(REPO / 'scripts' / 'build_dists.sh'), str(out), str(source)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count('PASSED') == 2, proc.stdout  # twine's verdict on each of the two files
    return out


def _wheel_metadata(dist: Path) -> email.message.Message:
    wheel = next(dist.glob('*.whl'))
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
        return email.message_from_bytes(z.read(name))


def test_the_sdist_and_the_wheel_are_built(dist):
    assert sorted(p.suffix for p in dist.iterdir()) == ['.gz', '.whl']


def test_the_wheel_is_typed(dist):
    """PEP 561: py.typed beside the package, so a user's type checker reads the annotations instead of Any."""
    with zipfile.ZipFile(next(dist.glob('*.whl'))) as z:
        assert 'timm_sknet/py.typed' in z.namelist()


def test_the_wheel_metadata_is_pyprojects_and_the_packages(dist):
    project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
    meta = _wheel_metadata(dist)
    assert meta['Name'] == project['name'] and meta['Version'] == timm_sknet.__version__
    assert meta['License-Expression'] == project['license'] == 'Apache-2.0'
    assert meta.get_all('License-File') == ['LICENSE']
    assert meta['Summary'] == project['description'] and meta['Requires-Python'] == project['requires-python']
    assert sorted(meta.get_all('Requires-Dist')[:len(project['dependencies'])]) == sorted(project['dependencies'])
    assert sorted(meta.get_all('Classifier')) == sorted(project['classifiers'])
    urls = dict(u.split(', ', 1) for u in meta.get_all('Project-URL'))
    assert urls == project['urls'] and all(u.startswith('https://') for u in urls.values())
    assert meta['Description-Content-Type'] == 'text/markdown'
    assert meta.get_payload().strip() == (REPO / 'README.md').read_text(encoding='utf-8').strip()
    with zipfile.ZipFile(next(dist.glob('*.whl'))) as z:
        assert any(n.endswith('.dist-info/licenses/LICENSE') for n in z.namelist())


def test_the_changelog_describes_this_version():
    entries = re.findall(r'^## (\S+) \((\d{4}-\d\d-\d\d)\)$', (REPO / 'CHANGELOG.md').read_text(), re.M)
    assert entries and entries[0][0] == timm_sknet.__version__, entries
    versions = [tuple(int(x) for x in v.split('.')) for v, _ in entries]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
