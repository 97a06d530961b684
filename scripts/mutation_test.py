#!/usr/bin/env python3
"""Mutation testing: does the suite catch plausible one-line bugs?

Each mutation in ``scripts/mutations.toml`` names a file, a snippet of it (which must occur exactly once),
its replacement (a bug a developer could plausibly write), a one-line description and the test files that
cover that code. The script copies the working tree (tracked and untracked, not ignored files) to a temporary
folder once, then for each mutation: patches the copy, runs ``python -m pytest -x -q`` on the mutation's test
files (``--full``: the whole suite) with ``PYTHONPATH`` set to the copy, and puts the file back. The real
checkout is never modified. A mutation is *killed* when pytest fails (or runs past ``--timeout``) and
*survives* when it passes; surviving mutations marked ``equivalent`` in the list (their reason says why no
test can tell them apart) are reported separately and left out of the score.

    python scripts/mutation_test.py                 # every mutation, its own test files
    python scripts/mutation_test.py --full          # every mutation, the whole suite (slow)
    python scripts/mutation_test.py --only train-    # the mutations whose id starts with this
    python scripts/mutation_test.py --list          # print the list, run nothing

Exit status: 0 when every survivor is explained as equivalent, 1 otherwise, 2 for a broken list.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LIST = ROOT / 'scripts' / 'mutations.toml'


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    original: str
    replacement: str
    description: str
    tests: List[str] = field(default_factory=list)
    equivalent: Optional[str] = None  # why no test can tell this mutant from the original


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # 'killed', 'timeout', 'survived'
    seconds: float
    detail: str = ''


def load_mutations(path: Path) -> List[Mutation]:
    """The list, checked: unique ids, existing files and tests, snippets found exactly once, real changes."""
    with open(path, 'rb') as f:
        entries = tomllib.load(f).get('mutation', [])
    mutations, problems, seen = [], [], set()
    for i, entry in enumerate(entries):
        try:
            m = Mutation(**entry)
        except TypeError as err:
            problems.append(f'entry {i + 1}: {err}')
            continue
        if m.id in seen:
            problems.append(f'{m.id}: duplicate id')
        seen.add(m.id)
        source = ROOT / m.file
        if not source.is_file():
            problems.append(f'{m.id}: no file {m.file}')
            continue
        count = source.read_text(encoding='utf-8').count(m.original)
        if count != 1:
            problems.append(f'{m.id}: the original snippet occurs {count} times in {m.file} (must be once)')
        if m.original == m.replacement:
            problems.append(f'{m.id}: the replacement equals the original')
        problems += [f'{m.id}: no test file {t}' for t in m.tests if not (ROOT / t.split('::')[0]).exists()]
        mutations.append(m)
    if problems:
        raise SystemExit('mutation list ' + str(path) + ' is broken:\n  ' + '\n  '.join(problems))
    return mutations


def copy_worktree(dest: Path) -> None:
    """Copy the files git would see (tracked and untracked, minus ignored ones) into ``dest``."""
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split('\0')
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree but still in the index
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def child_env(copy: Path) -> dict:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(copy), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    env['PYTHONDONTWRITEBYTECODE'] = '1'  # a mutant's .pyc must not outlive the mutant (same mtime, same size)
    return env


def check_imports_from(copy: Path) -> None:
    """The copy, not the checkout (or whatever the shared venv links), is what the tests import."""
    code = 'import timm_sknet, timm_sknet_autoload; print(timm_sknet.__file__); print(timm_sknet_autoload.__file__)'
    out = subprocess.run([sys.executable, '-c', code], cwd=copy, env=child_env(copy), check=True,
                         capture_output=True, text=True).stdout.split()
    for path in out:
        if not Path(path).resolve().is_relative_to(copy.resolve()):
            raise SystemExit(f'the tests would import {path}, not the copy in {copy}; fix PYTHONPATH')
    print(f'imports come from the copy: {", ".join(out)}')


def run_pytest(copy: Path, tests: Sequence[str], timeout: float, stop_first: bool = True):
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *(['-x'] if stop_first else []),
           *tests]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=child_env(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - start, ''
    return proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(('FAILED ', 'ERROR ')):
            return line.split(' - ')[0]
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ''


def run_mutation(copy: Path, m: Mutation, tests: Sequence[str], timeout: float) -> Outcome:
    target = copy / m.file
    original_text = target.read_text(encoding='utf-8')
    target.write_text(original_text.replace(m.original, m.replacement, 1), encoding='utf-8')
    try:
        code, seconds, output = run_pytest(copy, tests, timeout)
    finally:
        target.write_text(original_text, encoding='utf-8')
    if code is None:
        return Outcome(m, 'timeout', seconds, f'ran past {timeout:g} s')
    if code == 0:
        return Outcome(m, 'survived', seconds)
    if code not in (1, 2):  # 3-5: pytest itself failed (usage, no tests): not a kill
        raise SystemExit(f'{m.id}: pytest exited with {code}:\n{output[-3000:]}')
    return Outcome(m, 'killed', seconds, first_failure(output))


def report(outcomes: Sequence[Outcome]) -> int:
    killed = [o for o in outcomes if o.status in ('killed', 'timeout')]
    survivors = [o for o in outcomes if o.status == 'survived']
    explained = [o for o in survivors if o.mutation.equivalent]
    unexplained = [o for o in survivors if not o.mutation.equivalent]
    scored = len(outcomes) - len(explained)
    score = 100.0 * len(killed) / scored if scored else 100.0
    print(f'\n{len(killed)} of {len(outcomes)} mutations killed, {len(survivors)} survived '
          f'({len(explained)} equivalent, explained in the list); score {len(killed)}/{scored} = {score:.1f} %')
    for o in explained:
        print(f'  equivalent  {o.mutation.id}: {o.mutation.equivalent}')
    for o in unexplained:
        print(f'  SURVIVED    {o.mutation.id} ({o.mutation.file}): {o.mutation.description}')
    stale = [o for o in killed if o.mutation.equivalent]
    for o in stale:
        print(f'  note: {o.mutation.id} is marked equivalent but was killed ({o.detail}); update the list')
    return 1 if unexplained else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--mutations', type=Path, default=DEFAULT_LIST, help='the list (default: %(default)s)')
    parser.add_argument('--full', action='store_true', help='run the whole suite for every mutation')
    parser.add_argument('--only', action='append', default=[], metavar='PREFIX',
                        help='run the mutations whose id starts with PREFIX (repeatable)')
    parser.add_argument('--timeout', type=float, default=900, help='seconds per mutation (default: %(default)s)')
    parser.add_argument('--baseline', action='store_true',
                        help='first run the selected test files unmutated: they must pass')
    parser.add_argument('--list', action='store_true', help='print the mutations and exit')
    args = parser.parse_args(argv)

    mutations = load_mutations(args.mutations)
    if args.only:
        mutations = [m for m in mutations if m.id.startswith(tuple(args.only))]
    if args.list:
        for m in mutations:
            flag = ' (equivalent)' if m.equivalent else ''
            print(f'{m.id:<34} {m.file:<44} {m.description}{flag}')
        print(f'{len(mutations)} mutations')
        return 0
    if not mutations:
        raise SystemExit('no mutation selected')

    with tempfile.TemporaryDirectory(prefix='timm-sknet-mutants-') as tmp:
        copy = Path(tmp) / 'repo'
        copy_worktree(copy)
        check_imports_from(copy)
        if args.baseline:
            tests = ['tests'] if args.full else sorted({t.split('::')[0] for m in mutations for t in m.tests or ['tests']})
            code, seconds, output = run_pytest(copy, tests, args.timeout * 4, stop_first=False)
            if code != 0:
                raise SystemExit(f'the unmutated tests do not pass ({seconds:.0f} s):\n{output[-3000:]}')
            print(f'baseline: {len(tests)} test files pass unmutated ({seconds:.0f} s)')
        outcomes = []
        for i, m in enumerate(mutations, 1):
            tests = ['tests'] if args.full or not m.tests else m.tests
            outcome = run_mutation(copy, m, tests, args.timeout)
            outcomes.append(outcome)
            print(f'[{i}/{len(mutations)}] {outcome.status:<8} {m.id:<34} {outcome.seconds:6.1f} s  '
                  f'{outcome.detail}', flush=True)
    return report(outcomes)


if __name__ == '__main__':
    sys.exit(main())
