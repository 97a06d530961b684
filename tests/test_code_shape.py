"""The package's shape: lint clean, dependencies one way, small functions, a light ``import timm_sknet``.

These run the same tools CI would (ruff, import-linter) so that a cycle, an upward import or an unused
import fails the suite, not just a reviewer's eye.
"""
import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.checks  # scripts/check.sh lint

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'timm_sknet'
#: "no function over about 60 lines": counted without the docstring
MAX_FUNCTION_LINES = 60
#: no module over this many lines, docstrings and comments included
MAX_MODULE_LINES = 400
#: names that say nothing of what a module or package holds
VAGUE_NAMES = ('utils', 'util', 'helpers', 'helper', 'misc', 'tools', 'common')


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.fail(f'{name} is not installed: install the test extra (pip install -e ".[test]")')
    return path


def test_ruff_finds_nothing():
    proc = subprocess.run([_tool('ruff'), 'check', '--no-cache', str(REPO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_import_contracts_are_kept():
    """tools -> inference -> models -> hub | layers -> errors | file_io, no cycles, no drawing below tools."""
    proc = subprocess.run([_tool('lint-imports'), '--no-cache'], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'broken' not in proc.stdout.split('Contracts:')[-1].replace('0 broken', '')


def _function_lengths(path: Path):
    tree = ast.parse(path.read_text(encoding='utf-8'))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                length -= first.end_lineno - first.lineno + 1
            yield node.name, node.lineno, length


def test_no_function_is_longer_than_about_60_lines():
    long = [f'{path.relative_to(REPO)}:{line} {name} ({length} lines)'
            for path in sorted(PACKAGE.rglob('*.py')) for name, line, length in _function_lengths(path)
            if length > MAX_FUNCTION_LINES]
    assert long == []


def test_the_function_length_check_counts_what_it_should(tmp_path):
    body = '\n'.join(f'    x{i} = {i}' for i in range(MAX_FUNCTION_LINES))
    source = tmp_path / 'long.py'
    source.write_text(f'def f():\n    """Doc\n    string."""\n{body}\n')
    assert list(_function_lengths(source)) == [('f', 1, MAX_FUNCTION_LINES + 1)]


def _modules_after(statement: str) -> set:
    code = f'import sys; {statement}; print(__import__("json").dumps(sorted(sys.modules)))'
    env = {**os.environ, 'TIMM_SKNET_AUTOLOAD': '0'}  # `import timm` alone, without the autoload's registration
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


#: the packages built on the models: ``import timm_sknet`` imports none of them
BUILT_ON_THE_MODELS = ('analysis', 'batch', 'bench', 'caffe', 'cli', 'data', 'serving', 'training')


def test_import_timm_sknet_loads_nothing_built_on_the_models_and_draws_nothing():
    """Beyond what ``import timm`` loads itself: no module built on the models, no PIL drawing, no matplotlib."""
    timm_alone = _modules_after('import timm')
    ours = _modules_after('import timm_sknet') - timm_alone
    assert 'timm_sknet.models.sknets' in ours, 'the models are registered'
    built_on = tuple(f'timm_sknet.{name}' for name in BUILT_ON_THE_MODELS)
    added = sorted(m for m in ours if m.startswith((*built_on, 'PIL', 'matplotlib')))
    assert added == []
    assert not any(m.startswith(('timm_sknet.inference', 'torchvision.models.detection')) for m in ours)


def test_every_package_built_on_the_models_is_named_in_the_import_contract():
    """A new package must take its place in the layers contract, or import-linter would not check it."""
    packages = sorted(p.parent.name for p in PACKAGE.glob('*/__init__.py'))
    assert set(packages) - {'hub', 'inference', 'layers', 'models'} == set(BUILT_ON_THE_MODELS)
    contract = (REPO / 'pyproject.toml').read_text(encoding='utf-8')
    assert all(f'"timm_sknet.{name}' in contract or f' timm_sknet.{name} ' in contract or f'timm_sknet.{name}"' in contract
               for name in packages)


def test_no_module_is_over_400_lines():
    long = [f'{path.relative_to(REPO)} ({n} lines)' for path in sorted(PACKAGE.rglob('*.py'))
            if (n := len(path.read_text(encoding='utf-8').splitlines())) > MAX_MODULE_LINES]
    assert long == []


def test_no_module_or_package_has_a_name_that_says_nothing():
    vague = sorted(str(path.relative_to(REPO)) for path in PACKAGE.rglob('*')
                   if '__pycache__' not in path.parts and path.stem in VAGUE_NAMES)
    assert vague == []
