"""Prints the key of the project's cached environment: a hash of this interpreter's version and the dependencies
pyproject.toml declares, nothing else of it. scripts/env.sh names the venv after it; CI keys its caches with it."""
import hashlib
import sys
from pathlib import Path

if sys.version_info < (3, 11):
    sys.exit(f'timm-sknet needs Python 3.11 or later (pyproject.toml requires-python), this is '
             f'{sys.version.split()[0]}: set PYTHON=python3.11 (or newer) and run the script again')
import tomllib  # noqa: E402  (3.11's; after the version check, so 3.10 gets the message above)

project = tomllib.loads((Path(__file__).resolve().parents[1] / 'pyproject.toml').read_text())['project']
deps = [sys.version.split()[0], project.get('dependencies', []), project.get('optional-dependencies', {})]
print(hashlib.sha256(repr(deps).encode()).hexdigest()[:16])
