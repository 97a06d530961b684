"""The files GitHub and contributors read: workflows that validate and are safe, run the scripts .ci/run runs and
test the Python versions the package declares; a valid CITATION.cff that follows the changelog; a valid pre-commit
config. Offline: GitHub's schemas come with check-jsonschema, zizmor runs with --offline."""
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import timm_sknet

pytestmark = pytest.mark.checks

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / '.github' / 'workflows').glob('*.yml'))
BIN = Path(sys.executable).parent
PROJECT = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']


def _run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, 'PATH': f'{BIN}{os.pathsep}{os.environ["PATH"]}', 'VIRTUAL_ENV': sys.prefix}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300, **kwargs)


def _workflow(name: str) -> dict:
    return yaml.safe_load((REPO / '.github' / 'workflows' / name).read_text())


def _run_lines(workflow: dict) -> list:
    return [line.strip() for job in workflow['jobs'].values() for step in job.get('steps', [])
            for line in step.get('run', '').splitlines()]


def test_workflows_and_the_local_action_match_githubs_schemas():
    assert [w.name for w in WORKFLOWS] == ['ci.yml', 'docs.yml', 'release.yml']
    proc = _run(str(BIN / 'check-jsonschema'), '--builtin-schema', 'vendor.github-workflows', *map(str, WORKFLOWS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    actions = [str(p) for p in (REPO / '.github' / 'actions').rglob('action.yml')]
    proc = _run(str(BIN / 'check-jsonschema'), '--builtin-schema', 'vendor.github-actions', *actions)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_issue_templates_match_githubs_schemas():
    templates = REPO / '.github' / 'ISSUE_TEMPLATE'
    forms = [str(templates / 'bug_report.yml'), str(templates / 'feature_request.yml')]
    for schema, files in (('vendor.github-issue-forms', forms), ('vendor.github-issue-config', [str(templates / 'config.yml')])):
        proc = _run(str(BIN / 'check-jsonschema'), '--builtin-schema', schema, *files)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'timm-sknet env' in (templates / 'bug_report.yml').read_text()


def test_zizmor_finds_nothing_unsafe():
    proc = _run(str(BIN / 'zizmor'), '--offline', '--no-progress', '.github')
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_zizmor_would_flag_an_unpinned_action(tmp_path):
    """The check above can fail: the same workflow with a tag instead of a commit SHA is refused."""
    (tmp_path / '.github' / 'workflows').mkdir(parents=True)
    text = (REPO / '.github' / 'workflows' / 'release.yml').read_text()
    unpinned = re.sub(r'pypa/gh-action-pypi-publish@[0-9a-f]{40}', 'pypa/gh-action-pypi-publish@release/v1', text)
    assert unpinned != text
    (tmp_path / '.github' / 'workflows' / 'release.yml').write_text(unpinned)
    proc = _run(str(BIN / 'zizmor'), '--offline', '--no-progress', str(tmp_path / '.github'))
    assert proc.returncode != 0 and 'unpinned-uses' in proc.stdout, proc.stdout[-3000:]


def test_every_action_is_pinned_to_a_commit_with_its_version_named():
    uses = [line for path in [*WORKFLOWS, *(REPO / '.github' / 'actions').rglob('action.yml')]
            for line in path.read_text().splitlines() if 'uses:' in line and 'uses: ./' not in line]
    assert uses
    bad = [u for u in uses if not re.search(r'uses: [\w.-]+/[\w./-]+@[0-9a-f]{40}  # v\d+(\.\d+)*$', u)]
    assert bad == []


def _scripts(lines) -> set:
    return {m for line in lines for m in re.findall(r'\bbash (scripts/\w+\.sh)', line)}


def test_ci_runs_the_scripts_that_ci_run_runs():
    ci_run = (REPO / '.ci' / 'run').read_text().splitlines()
    ci = _workflow('ci.yml')
    assert _scripts(_run_lines(ci)) == _scripts(ci_run) == {
        'scripts/check.sh', 'scripts/test.sh', 'scripts/test_min_versions.sh'}
    # the checks job covers every group of scripts/check.sh, and the suite leaves exactly those out
    groups = set(re.search(r'groups=\(([\w ]+)\)', (REPO / 'scripts' / 'check.sh').read_text()).group(1).split())
    assert {line.split()[-1] for line in _run_lines(ci) if 'scripts/check.sh' in line} == groups
    test_lines = [line for line in _run_lines(ci) + ci_run if 'scripts/test.sh' in line]
    assert test_lines and all(line.endswith('-m "not checks"') for line in test_lines)


def test_the_checks_marker_is_on_the_files_check_sh_runs():
    text = (REPO / 'scripts' / 'check.sh').read_text()
    grouped = set(re.findall(r'\]=(tests/\w+\.py)', text))
    marked = {f'tests/{p.name}' for p in (REPO / 'tests').glob('test_*.py') if 'mark.checks' in p.read_text()}
    assert grouped == marked


def _declared_pythons() -> list:
    return sorted(re.findall(r'Programming Language :: Python :: (3\.\d+)$', '\n'.join(PROJECT['classifiers']), re.M))


def test_python_versions_agree_everywhere():
    declared = _declared_pythons()
    assert declared, 'pyproject.toml names no Python version in its classifiers'
    assert PROJECT['requires-python'] == f'>={declared[0]}'
    readme = (REPO / 'README.md').read_text()
    assert re.search(r'Tested on Python ([\d.]+),', readme).group(1) == ' and '.join(declared)
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        for job in workflow['jobs'].values():
            matrix = job.get('strategy', {}).get('matrix', {}).get('python')
            if matrix is not None:
                assert sorted(matrix) == declared, path.name
            for step in job.get('steps', []):
                version = step.get('with', {}).get('python-version', '${{')
                assert version.startswith('${{') or version in declared, (path.name, version)
    assert f'{sys.version_info.major}.{sys.version_info.minor}' in declared, 'the suite runs on an undeclared Python'


def test_the_release_builds_with_the_pinned_tools():
    pins = dict(re.findall(r'"(build|twine)==([\d.]+)"', (REPO / 'pyproject.toml').read_text()))
    installs = [line for line in _run_lines(_workflow('release.yml')) if 'pip install' in line]
    assert installs == [f'python -m pip install build=={pins["build"]} twine=={pins["twine"]}']


def test_the_citation_is_valid_and_follows_the_changelog():
    proc = _run('bash', '-c', 'source scripts/tool_env.sh && PYTHONPATH="$TIMM_SKNET_TOOLS" python -c '
                '"from cffconvert.cli.cli import cli; cli()" --validate -i CITATION.cff')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cff = yaml.safe_load((REPO / 'CITATION.cff').read_text())
    version, date = re.search(r'^## (\S+) \((\d{4}-\d\d-\d\d)\)$', (REPO / 'CHANGELOG.md').read_text(), re.M).groups()
    assert (cff['version'], cff['date-released']) == (timm_sknet.__version__, date) and version == cff['version']
    assert cff['preferred-citation']['url'] == PROJECT['urls']['Paper']
    assert cff['repository-code'] == PROJECT['urls']['Source']


def test_the_citation_check_can_fail(tmp_path):
    broken = tmp_path / 'CITATION.cff'
    broken.write_text((REPO / 'CITATION.cff').read_text().replace('type: conference-paper', 'type: talkx'))
    proc = _run('bash', '-c', 'source scripts/tool_env.sh && PYTHONPATH="$TIMM_SKNET_TOOLS" python -c '
                f'"from cffconvert.cli.cli import cli; cli()" --validate -i {broken}')
    assert proc.returncode != 0


def test_the_pre_commit_config_validates_and_runs_the_checks():
    proc = _run(str(BIN / 'pre-commit'), 'validate-config', '.pre-commit-config.yaml')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hooks = yaml.safe_load((REPO / '.pre-commit-config.yaml').read_text())['repos'][0]['hooks']
    assert [h['entry'] for h in hooks] == ['bash scripts/check.sh lint', 'bash scripts/check.sh types',
                                           'bash scripts/check.sh project']
