"""Every Python block of the README runs as written, in order, in one namespace (as a reader pastes them).

The blocks load ``pretrained=True`` weights from the Hub: a Hub stand-in on 127.0.0.1 serves random weights
under the real repository names, so the code path is the real one and no test reaches the internet. A block
preceded by ``<!-- readme-test: skip (reason) -->`` holds placeholders (your commit, your files) and is skipped;
the reasons must be given and such blocks stay few.
"""
import re
from pathlib import Path

import pytest
from hub_fixtures import *  # noqa: F401,F403  (fixtures)
from hub_fixtures import SKNET50_REPO
from left_out import uses_left_out_module

README = Path(__file__).resolve().parents[1] / 'README.md'
_BLOCK = re.compile(r'(?:<!-- readme-test: skip \((?P<why>[^)]+)\) -->\n)?```python\n(?P<code>.*?)```', re.S)


def readme_blocks():
    """[(line number, code, skip reason or None)] of every ```python block, in order."""
    text = README.read_text(encoding='utf-8')
    return [(text[:m.start('code')].count('\n') + 1, m.group('code'), m.group('why'))
            for m in _BLOCK.finditer(text)]


def test_the_readme_has_runnable_blocks_and_few_skipped_ones():
    blocks = readme_blocks()
    skipped = [b for b in blocks if b[2]]
    assert len(blocks) >= 8 and len(skipped) <= 2, skipped


def test_every_python_block_of_the_readme_runs(local_hub, sknet50_full, tmp_path, monkeypatch):
    local_hub.add_commit(SKNET50_REPO, {'model.safetensors': sknet50_full.data})
    monkeypatch.chdir(tmp_path)  # blocks write files (exports) into the current folder
    namespace = {'__name__': '__readme__'}
    for line, code, skip in readme_blocks():
        if skip or uses_left_out_module(code):  # left out: see tests/left_out.py (CI's minimum-versions job)
            continue
        try:
            exec(compile(code, f'README.md:{line}', 'exec'), namespace)
        except Exception as e:  # noqa: BLE001  (name the block that failed)
            pytest.fail(f'README.md block at line {line} failed: {type(e).__name__}: {e}')
