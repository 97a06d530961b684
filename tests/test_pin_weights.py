"""scripts/pin_weights.py against the local Hub: it downloads the three timm weight files through the verified path,
prints sha256, size and commit, and writes them into a pins module; a Hub that corrupts the file gets no pin.
"""
import hashlib
import os
import runpy
import shutil
import subprocess
import sys

from hub_fixtures import *  # noqa: F401,F403  (fixtures)
from hub_fixtures import REPO_ROOT, SKNET18_REPO, SKNET50_REPO, child_env

import timm_sknet.hub.pins as package_pins

REPOS = (SKNET18_REPO, 'timm/skresnet34.ra_in1k', SKNET50_REPO)
PINS_MODULE = REPO_ROOT / 'timm_sknet' / 'hub' / 'pins.py'


def _run_script(hub, cache, *args):
    return subprocess.run([sys.executable, 'scripts/pin_weights.py', *map(str, args)], cwd=REPO_ROOT,
                          env=child_env(hub.endpoint, cache), capture_output=True, text=True, timeout=300)


def _load_script():
    return runpy.run_path(str(REPO_ROOT / 'scripts' / 'pin_weights.py'), run_name='pin_weights')


def test_the_script_downloads_prints_and_writes_the_pins(local_hub, hf_cache, tmp_path):
    served = {repo: os.urandom(4096) for repo in REPOS}  # the script hashes bytes; they need not be a model
    commits = {repo: local_hub.add_commit(repo, {'model.safetensors': data}) for repo, data in served.items()}
    pins_file = tmp_path / 'pins.py'
    shutil.copy(PINS_MODULE, pins_file)

    proc = _run_script(local_hub, hf_cache, '--pins', pins_file)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines() if line.startswith('timm/')}
    expected = {f'{repo}/model.safetensors': (hashlib.sha256(data).hexdigest(), len(data), commits[repo])
                for repo, data in served.items()}
    assert printed == {key: [digest, f'{size:,}', commit] for key, (digest, size, commit) in expected.items()}
    written = runpy.run_path(str(pins_file))['PINS']
    assert {key: tuple(pin) for key, pin in written.items()} == expected
    assert local_hub.count('GET', 'model.safetensors', server='cdn') == 3


def test_a_corrupting_hub_gets_no_pin_and_the_pins_stay_as_they_were(local_hub, hf_cache, tmp_path, capsys):
    for repo in REPOS:
        local_hub.add_commit(repo, {'model.safetensors': os.urandom(4096)})
    local_hub.fault = 'corrupt'
    pins_file = tmp_path / 'pins.py'
    shutil.copy(PINS_MODULE, pins_file)
    rc = _load_script()['main'](['--pins', str(pins_file)])  # in this process: the fixtures point it at the Hub
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith('pin_weights: error: ') and 'integrity check failed' in err
    assert pins_file.read_bytes() == PINS_MODULE.read_bytes()


def test_the_packaged_pins_are_empty_and_exactly_what_the_script_writes_for_none():
    """No digest is invented in the repository: the pins are empty until the script runs against the Hub."""
    assert package_pins.PINS == {}
    script = _load_script()
    text = PINS_MODULE.read_text(encoding='utf-8')
    assert text.endswith(script['_HEADER'] + script['render']({}))


def test_the_weights_card_says_which_files_are_pinned_and_which_are_checked_against_the_hub_only():
    card = (REPO_ROOT / 'weights_card.md').read_text(encoding='utf-8').splitlines()
    files = _load_script()['hub_weight_files']()
    assert sorted(files) == sorted(f'{repo}/model.safetensors' for repo in REPOS)
    for key in files:
        rows = [line for line in card if line.startswith(f'| `{key}` |')]
        assert len(rows) == 1, key
        pin = package_pins.PINS.get(key)
        assert (pin.sha256 in rows[0]) if pin else ('announces' in rows[0] and 'only' in rows[0]), rows[0]
