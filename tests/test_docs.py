"""The README, the documentation site and the weights card cannot go stale unnoticed.

- Every ```python block runs as written, in order, one namespace per file (as a reader pastes them), against a Hub
  stand-in on 127.0.0.1 that serves random weights under the real repository names, so ``pretrained=True`` takes
  the real code path. A block directly below ``<!-- docs-test: skip (reason) -->`` holds placeholders or needs
  what the tests cannot have; it is skipped, with its reason, and such blocks stay few.
- Every ``timm_sknet...`` dotted name and every repository path mentioned in those files, in the package's
  docstrings and in pyproject.toml's comments exists.
- The model tables equal what ``timm-sknet list`` prints, and ``mkdocs build --strict`` passes (a broken link, a
  missing page or a docstring mkdocstrings cannot read fails it).
"""
import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hub_fixtures import *  # noqa: F401,F403  (fixtures)
from hub_fixtures import SKNET18_REPO, SKNET50_REPO
from left_out import uses_left_out_module

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', REPO / 'weights_card.md', *sorted((REPO / 'docs').rglob('*.md'))]
_BLOCK = re.compile(r'(?:<!-- docs-test: skip \((?P<why>[^)]+)\) -->\n)?```python\n(?P<code>.*?)```', re.S)
#: a dotted name of the package, as prose mentions it (a trailing call or attribute access is not part of it)
_DOTTED = re.compile(r'\btimm_sknet(?:\.[A-Za-z_][A-Za-z0-9_]*)+')
#: a path in the repository: under one of its folders, or one of its top-level files
_TOP_FILES = ('README.md', 'CHANGELOG.md', 'LICENSE', 'weights_card.md', 'hubconf.py', 'pyproject.toml', 'setup.py',
              'mkdocs.yml', 'MANIFEST.in', 'timm_sknet_autoload.py', 'timm_sknet_autoload.pth')
_PATH = re.compile(r'(?<![\w/.-])((?:timm_sknet|tests|scripts|benchmarks|docs|examples|\.ci)/[\w./-]*[\w/]|'
                   + '|'.join(re.escape(f) for f in _TOP_FILES) + r')(?![\w*<{-])')  # not a glob or a placeholder


def python_blocks(page: Path):
    """[(line number, code, skip reason or None)] of every ```python block of ``page``, in order."""
    text = page.read_text(encoding='utf-8')
    return [(text[:m.start('code')].count('\n') + 1, m.group('code'), m.group('why')) for m in _BLOCK.finditer(text)]


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.mark.parametrize('page', [p for p in PAGES if python_blocks(p)], ids=_page_id)
def test_every_python_block_runs(page, local_hub, sknet50_full, sknet18_full, tmp_path, monkeypatch):
    local_hub.add_commit(SKNET50_REPO, {'model.safetensors': sknet50_full.data})
    local_hub.add_commit(SKNET18_REPO, {'model.safetensors': sknet18_full.data})
    monkeypatch.chdir(tmp_path)  # blocks write files (exports) into the current folder
    namespace = {'__name__': '__docs__'}
    for line, code, skip in python_blocks(page):
        if skip or uses_left_out_module(code):  # left out: see tests/left_out.py (CI's minimum-versions job)
            continue
        try:
            exec(compile(code, f'{_page_id(page)}:{line}', 'exec'), namespace)
        except Exception as e:  # noqa: BLE001  (name the block that failed)
            pytest.fail(f'{_page_id(page)} block at line {line} failed: {type(e).__name__}: {e}')


def test_blocks_are_skipped_rarely_and_for_a_reason():
    skipped = {_page_id(p): [line for line, _, why in python_blocks(p) if why] for p in PAGES}
    assert all(len(lines) <= 2 for lines in skipped.values()), skipped
    assert sum(len(python_blocks(p)) for p in PAGES) >= 25  # the docs show code, and it runs


def _docstrings() -> list:
    """(where, text) of every module, class and function docstring of the package."""
    found = []
    for path in sorted((REPO / 'timm_sknet').rglob('*.py')):
        tree = ast.parse(path.read_text(encoding='utf-8'))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    found.append((f'{path.relative_to(REPO)}:{getattr(node, "lineno", 1)}', doc))
    return found


def _pyproject_comments() -> str:
    return '\n'.join(line.split('#', 1)[1] for line in (REPO / 'pyproject.toml').read_text().splitlines()
                     if '#' in line)


def _sources() -> list:
    """(where, text) of everything whose mentions must exist: pages, docstrings, pyproject comments."""
    return ([(_page_id(p), p.read_text(encoding='utf-8')) for p in PAGES] + _docstrings()
            + [('pyproject.toml comments', _pyproject_comments())])


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a module of the package or an attribute reachable from one."""
    parts = dotted.split('.')
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:cut]))
        except ModuleNotFoundError as e:  # a module of ours that needs a package the suite does not install
            if e.name and not e.name.startswith('timm_sknet') and cut == len(parts):
                return importlib.util.find_spec(dotted) is not None  # (LitServe: benchmarks/requirements.txt)
            continue
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_timm_sknet_name_mentioned_exists():
    missing = sorted({f'{where}: {name}' for where, text in _sources() for name in _DOTTED.findall(text)
                      if not _resolves(name)})
    assert missing == []


def test_the_name_check_can_fail():
    assert _resolves('timm_sknet.models.complexity.measure') and _resolves('timm_sknet.hub.export_hub_folder')
    assert not _resolves('timm_sknet.complexity.measure') and not _resolves('timm_sknet.hub.no_such_thing')


def test_every_repository_path_mentioned_exists():
    missing = sorted({f'{where}: {path}' for where, text in _sources() for path in _PATH.findall(text)
                      if not (REPO / path.rstrip('.')).exists()})
    assert missing == []


def test_the_path_check_finds_paths_in_prose():
    text = ('see `timm_sknet/hub/download.py`, scripts/test.sh and (weights_card.md); not pretty/timm_sknet/x, '
            'tests/test_hub_*.py or benchmarks/results/<runner>.md')
    assert _PATH.findall(text) == ['timm_sknet/hub/download.py', 'scripts/test.sh', 'weights_card.md',
                                   'benchmarks/results']


def _headings(page: Path) -> set:
    """The headings of a markdown page as a reader sees them (no #, no backticks), code blocks left out."""
    text = re.sub(r'```.*?```', '', page.read_text(encoding='utf-8'), flags=re.S)
    return {line.lstrip('#').strip().replace('`', '') for line in text.splitlines() if re.match(r'#+ ', line)}


def test_the_sections_pyproject_comments_point_at_exist():
    comments = ' '.join(line.split('#', 1)[1] for line in (REPO / 'pyproject.toml').read_text().splitlines()
                        if '#' in line)
    references = re.findall(r'\b(README|docs/[\w-]+\.md) "([^"]+)"', ' '.join(comments.split()))
    assert len(references) >= 3
    for page, section in references:
        assert section in _headings(REPO / (page + '.md' if page == 'README' else page)), (page, section)


@pytest.mark.parametrize('page', ['README.md', 'docs/models.md'])
def test_the_model_table_is_what_timm_sknet_list_prints(page):
    from timm_sknet.cli.list_models import model_table
    assert model_table() in (REPO / page).read_text(encoding='utf-8')


@pytest.mark.checks  # scripts/check.sh docs
def test_mkdocs_builds_the_site_strictly(tmp_path):
    env = {**os.environ, 'NO_MKDOCS_2_WARNING': '1', 'PYTHONPATH': str(REPO)}
    mkdocs = Path(sys.executable).parent / 'mkdocs'
    proc = subprocess.run([str(mkdocs), 'build', '--strict', '--site-dir', str(tmp_path / 'site')], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / 'site' / 'reference' / 'layers' / 'index.html').read_text().count('SelectiveKernel') > 5


SITE = 'https://timm-sknet.github.io/timm-sknet/'  # link prefixes, compared as text, never contacted
GITHUB_FILE = 'https://github.com/timm-sknet/timm-sknet/blob/main/'  # likewise


@pytest.mark.parametrize('page', ['README.md', 'weights_card.md'])
def test_links_work_on_pypi_github_and_the_site(page):
    """PyPI shows the README without the repository, so its links are absolute; the weights card is read on GitHub
    and inside the site. Links into the site and the repository name pages and files that exist."""
    targets = re.findall(r'\]\(([^)\s]+)\)', (REPO / page).read_text(encoding='utf-8'))
    assert targets and [t for t in targets if not t.startswith(('https://', '#'))] == []
    for target in targets:
        if target.startswith(SITE):
            name = target[len(SITE):].split('#')[0].strip('/') or 'index'
            assert (REPO / 'docs' / f'{name}.md').exists(), target
        elif target.startswith(GITHUB_FILE):
            assert (REPO / target[len(GITHUB_FILE):]).exists(), target


def test_the_install_line_names_every_extra_a_user_installs():
    """``test`` and ``docs`` are the project's own; ``export`` is what ``onnxruntime`` installs, under the name of the
    function it serves."""
    import tomllib
    extras = set(tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['optional-dependencies'])
    line = next(line for line in (REPO / 'README.md').read_text().splitlines() if line.startswith('pip install timm-sknet'))
    assert set(re.findall(r'\[(\w+)\]', line)) == extras - {'test', 'docs', 'export'}


def test_the_documentation_url_is_where_the_site_is_served():
    import tomllib

    import yaml
    urls = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['urls']
    assert urls['Documentation'] == SITE == yaml.safe_load((REPO / 'mkdocs.yml').read_text())['site_url']


def _page(name: str) -> str:
    return ' '.join((REPO / name).read_text(encoding='utf-8').split())


def test_facts_the_pages_state_are_the_codes():
    """What a page says that the code knows: the model list's order, training defaults, optimize's tolerances."""
    import timm

    from timm_sknet.cli.help_format import Parser
    from timm_sknet.inference import TOLERANCES
    from timm_sknet.inference.optimized_model import INT8_MIN_TOP1_AGREEMENT
    from timm_sknet.training.arguments import add_train_arguments

    assert repr(timm.list_models('sknet*')[:5])[:-1] in _page('docs/getting-started.md')
    d = add_train_arguments(Parser()).parse_args([])
    assert (f'`{d.model}`, {d.opt[:4].capitalize()}{d.opt[4:].upper()} at lr {d.lr:g} with weight decay '
            f'{d.weight_decay:g}, a {d.sched} schedule with {["no", "one"][d.warmup_epochs]} warm-up epoch, '
            f'{d.epochs} epochs, {d.batch_size} images per process and step, label smoothing {d.smoothing:g}'
            ) in _page('docs/training.md').replace('1e-3', f'{1e-3:g}')
    stated = re.search(r'within (\S+) of its largest output in fp32, (\S+) in bf16, and (\S+) in int8 with the same '
                       r'top-1 class on at least (\d+) %', _page('docs/inference.md'))
    assert [float(x) for x in stated.groups()] == [TOLERANCES['fp32'], TOLERANCES['bf16'], TOLERANCES['int8'],
                                                   INT8_MIN_TOP1_AGREEMENT * 100]
