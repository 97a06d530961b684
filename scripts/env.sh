#!/usr/bin/env bash
# Source me: makes (once) and activates a virtual environment with the project's dependencies.
# The environment lives outside the checkout, keyed by a hash of the Python version and the dependencies in pyproject.toml, so a clean clone
# reuses it and a change of dependencies builds a new one. TIMM_SKNET_VENV_ROOT moves it.
set -euo pipefail
# flock and GNU coreutils: Linux only. Elsewhere the portable route is plain pip and pytest (CONTRIBUTING.md).
if [ "$(uname -s)" != Linux ]; then
    echo "scripts/*.sh need Linux (flock, GNU coreutils); this is $(uname -s). Instead, in a virtual environment" \
         "of Python 3.11 or later: pip install -e \".[test]\" && pytest" >&2
    return 1 2>/dev/null || exit 1
fi
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="${PYTHON:-python3}"
# Key: the interpreter and the declared dependencies (scripts/env_key.py; CI keys its caches with it too).
key="$("$python_bin" "$repo_root/scripts/env_key.py")"
venv_root="${TIMM_SKNET_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/timm-sknet}"
venv="$venv_root/venv-$key"
# pip, minus this machine's noise about unused local index folders; pip's exit status is kept.
pip_quiet() { "$venv/bin/python" -m pip install -q "$@" 2> >(grep -v '^WARNING: Location' >&2); }
mkdir -p "$venv_root"
# One builder at a time per environment: a second run (another clone, a parallel job) waits for the first
# and then reuses what it built, instead of both writing the same folder.
exec 9>"$venv_root/.venv-$key.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
    echo "Creating $venv (torch, timm, ...: a few minutes the first time)" >&2
    rm -rf "$venv"
    "$python_bin" -m venv "$venv"
    pip_quiet --upgrade pip "setuptools>=77" wheel
    pip_quiet "$repo_root[test]"
    touch "$venv/.complete"
fi
flock -u 9
# Always (re)link this checkout: fast, and a reused environment never runs another clone's code.
# (setuptools' deprecation chatter is kept out of the way, and shown only if the install fails)
link_log="$(mktemp)"
if ! "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo_root" >"$link_log" 2>&1; then
    cat "$link_log" >&2
    exit 1
fi
rm -f "$link_log"
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
