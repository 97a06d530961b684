"""After ``pip install timm-sknet``, a program that imports only timm has the sknet models.

Every test runs a fresh interpreter that never imports timm_sknet itself, on a wheel (or editable wheel) built
from this checkout and installed by pip into a temporary folder (``installed_package.py``).
"""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from installed_package import *  # noqa: F401,F403  (fixtures)
from installed_package import REPO, run_python

PTH = 'timm_sknet_autoload.pth'


def _warnings_naming_the_switch(stderr: str) -> list:
    return [line for line in stderr.splitlines() if 'Warning' in line and 'TIMM_SKNET_AUTOLOAD' in line]


def test_the_wheel_and_sdist_carry_the_pth_and_record_it_for_uninstall(distributions):
    with zipfile.ZipFile(distributions.wheel) as whl:
        names = set(whl.namelist())
        record = whl.read(next(n for n in names if n.endswith('.dist-info/RECORD'))).decode()
    assert {PTH, 'timm_sknet_autoload.py'} <= names, 'at the wheel root, i.e. in site-packages'
    recorded = {line.split(',')[0] for line in record.splitlines()}
    assert {PTH, 'timm_sknet_autoload.py'} <= recorded
    with zipfile.ZipFile(distributions.editable) as whl:
        assert PTH in whl.namelist()


@pytest.mark.parametrize('site_fixture', ['wheel_site', 'editable_site'])
def test_import_timm_alone_registers_the_sknet_models_and_leaves_timm_as_it_was(site_fixture, request, distributions):
    site_dir = request.getfixturevalue(site_fixture)
    code = """
import importlib.machinery
from timm.models import create_model  # a submodule import loads timm first: the watcher fires there too
import timm
model = create_model('sknet18', layers=(1, 1, 1, 1))
print(type(model).__module__, sys.modules['timm_sknet'].__file__)
folder = sys.modules['timm_sknet'].hub.embedded.WEIGHTS_DIR  # a Hub-format folder inside the install
print(create_model(f'local-dir:{folder}', pretrained=True).pretrained_cfg['label_names'][0])
print(type(timm.__loader__) is importlib.machinery.SourceFileLoader, timm.__spec__.loader is timm.__loader__)
print(any(hasattr(f, 'timm_sknet_autoload') for f in sys.meta_path))
"""
    proc = run_python(site_dir, code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    module, origin, first_label, *rest = proc.stdout.split()
    assert module == 'timm_sknet.models.sknets' and first_label == 'disk'
    assert origin.startswith(str(site_dir if site_fixture == 'wheel_site' else distributions.source)), origin
    assert rest == ['True', 'True', 'False'], 'timm keeps its own loader; the watcher is gone once used'
    assert not _warnings_naming_the_switch(proc.stderr), proc.stderr


def test_interpreter_start_loads_neither_torch_nor_the_package(wheel_site):
    code = """
print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'timm_sknet', 'numpy')))
print([type(f).__name__ for f in sys.meta_path if hasattr(f, 'timm_sknet_autoload')])
"""
    proc = run_python(wheel_site, code)
    assert proc.returncode == 0, proc.stderr
    loaded, watchers = proc.stdout.splitlines()
    assert loaded == '[]'
    assert watchers == "['TimmImportWatcher']", 'exactly one watcher, waiting for timm'


def test_the_switch_turns_it_off_and_an_explicit_import_still_works(wheel_site):
    code = """
import timm
try:
    timm.create_model('sknet18', layers=(1, 1, 1, 1))
except RuntimeError as e:
    print(e)
import timm_sknet
print(type(timm.create_model('sknet18', layers=(1, 1, 1, 1))).__name__)
"""
    proc = run_python(wheel_site, code, env={'TIMM_SKNET_AUTOLOAD': 'off'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ['Unknown model (sknet18)', 'SKNet']
    assert not _warnings_naming_the_switch(proc.stderr)


def test_import_timm_sknet_first_registers_once_without_warnings(wheel_site):
    """The suite's (and many users') way: the package imports timm, the watcher must not import it again."""
    code = "import timm_sknet, timm\nprint(len(timm.list_models('sknet*')))"
    proc = run_python(wheel_site, code, args=('-W', 'error::UserWarning'))  # timm's re-registration warning fails
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout) >= 6
    assert 'Overwriting' not in proc.stderr and 'AutoloadWarning' not in proc.stderr


def _broken_copy(site_dir, tmp_path, remove=()):
    broken = tmp_path / 'site-packages'
    shutil.copytree(site_dir, broken)
    for name in remove:
        target = broken / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return broken


def test_package_folder_removed_gives_one_warning_and_timm_keeps_working(wheel_site, tmp_path):
    broken = _broken_copy(wheel_site, tmp_path, ['timm_sknet'])  # the .pth and its module left behind
    proc = run_python(broken, "import timm\nprint(timm.create_model('resnet10t').num_classes)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ['1000']
    [warning] = _warnings_naming_the_switch(proc.stderr)
    assert 'AutoloadWarning' in warning and "No module named 'timm_sknet'" in warning
    assert 'Traceback' not in proc.stderr


def test_only_the_pth_left_gives_one_warning_at_start_unless_switched_off(wheel_site, tmp_path):
    broken = _broken_copy(wheel_site, tmp_path, ['timm_sknet', 'timm_sknet_autoload.py'])
    proc = run_python(broken, "print('still running')")
    assert proc.returncode == 0 and proc.stdout.split() == ['still', 'running'], proc.stderr
    assert len(_warnings_naming_the_switch(proc.stderr)) == 1, proc.stderr
    assert 'Traceback' not in proc.stderr and 'Error processing line' not in proc.stderr
    quiet = run_python(broken, "print('still running')", env={'TIMM_SKNET_AUTOLOAD': '0'})
    assert quiet.returncode == 0 and quiet.stderr == '', quiet.stderr


def test_a_package_failing_on_import_never_fails_import_timm_even_with_warnings_as_errors(wheel_site, tmp_path):
    """A stand-in timm (no torch: fast) is enough: the watcher acts on the name, whatever timm holds."""
    broken = _broken_copy(wheel_site, tmp_path)
    init = broken / 'timm_sknet' / '__init__.py'
    init.write_text("raise ImportError('simulated incompatible timm')\n" + init.read_text())
    stub = tmp_path / 'stub'
    (stub / 'timm').mkdir(parents=True)
    (stub / 'timm' / '__init__.py').write_text("VERSION = 'stand-in'\n")
    code = f"sys.path.insert(0, {str(stub)!r})\nimport timm\nprint(timm.VERSION)"
    proc = run_python(broken, code, args=('-W', 'error'))
    assert proc.returncode == 0 and proc.stdout.split() == ['stand-in'], proc.stderr[-3000:]
    [warning] = _warnings_naming_the_switch(proc.stderr)
    assert 'AutoloadWarning' in warning and 'simulated incompatible timm' in warning


def test_pip_installs_it_into_a_venv_that_runs_it_at_start_and_pip_uninstall_removes_it(distributions, tmp_path):
    """A real interpreter start (not addsitedir): the venv has no timm, so nothing beyond the watcher loads."""
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
    python = venv / 'bin' / 'python'
    pip = [sys.executable, '-m', 'pip', '--python', str(python)]
    subprocess.run([*pip, 'install', '--quiet', '--no-deps', '--no-index', str(distributions.wheel)],
                   check=True, capture_output=True)
    site_packages = Path(subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                                        capture_output=True, text=True, check=True).stdout.strip())
    code = "import sys; print('timm_sknet_autoload' in sys.modules, 'torch' in sys.modules, 'timm_sknet' in sys.modules)"
    started = subprocess.run([str(python), '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert started.stdout.split() == ['True', 'False', 'False'], started.stderr
    assert (site_packages / PTH).is_file()
    subprocess.run([*pip, 'uninstall', '--quiet', '--yes', 'timm-sknet'], check=True, capture_output=True)
    leftovers = sorted(p.name for p in site_packages.glob('*timm_sknet*'))  # pip may remove the emptied folder
    assert leftovers == []
    after = subprocess.run([str(python), '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert after.stdout.split() == ['False', 'False', 'False'] and after.stderr == ''


# ---- the watcher's own logic, on stand-ins: no build, no torch --------------------------------------------------
_WATCH = """
import os, sys
import timm_sknet_autoload as autoload
{before}
autoload.install()
watching = any(hasattr(f, 'timm_sknet_autoload') for f in sys.meta_path)
{between}
import timm
print(watching, 'timm_sknet' in sys.modules, any(hasattr(f, 'timm_sknet_autoload') for f in sys.meta_path))
"""


def _run_watcher(tmp_path, before='', between='', env=None):
    """The autoload module from this checkout, a stand-in timm and a stand-in timm_sknet that only records its import."""
    stub = tmp_path / 'stub'
    for name in ('timm', 'timm_sknet'):
        (stub / name).mkdir(parents=True, exist_ok=True)
        (stub / name / '__init__.py').write_text('')
    environ = {k: v for k, v in os.environ.items() if k != 'TIMM_SKNET_AUTOLOAD'}
    environ.update(env or {}, PYTHONPATH=os.pathsep.join([str(stub), str(REPO)]))
    proc = subprocess.run([sys.executable, '-S', '-c', _WATCH.format(before=before, between=between)],
                          env=environ, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_the_watcher_registers_once_timm_is_imported_and_then_leaves(tmp_path):
    assert _run_watcher(tmp_path) == ['True', 'True', 'False']


def test_the_switch_is_read_again_when_timm_is_imported(tmp_path):
    """Set after start-up (the watcher is already in place), any case: timm imports, the package does not."""
    for value in ('No', 'OFF'):
        assert _run_watcher(tmp_path, between=f"os.environ['TIMM_SKNET_AUTOLOAD'] = {value!r}") == [
            'True', 'False', 'False'], value


def test_install_after_timm_was_imported_registers_at_once(tmp_path):
    assert _run_watcher(tmp_path, before='import timm') == ['False', 'True', 'False']


@pytest.mark.parametrize('value, on', [('0', False), ('false', False), ('No', False), (' OFF ', False),
                                       ('1', True), ('', True), ('yes', True)])
def test_the_switch_values(value, on, monkeypatch):
    import timm_sknet_autoload
    monkeypatch.setenv('TIMM_SKNET_AUTOLOAD', value)
    assert timm_sknet_autoload.enabled() is on
