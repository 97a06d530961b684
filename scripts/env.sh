#!/usr/bin/env bash
# Source me: makes (once) and activates a virtual environment with the project's dependencies.
# The environment lives outside the checkout, keyed by a hash of pyproject.toml, so a clean clone
# reuses it and a change of dependencies builds a new one. TIMM_SKNET_VENV_ROOT moves it.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="${PYTHON:-python3}"
key="$(cat "$repo_root/pyproject.toml" | sha256sum | cut -c1-16)"
venv_root="${TIMM_SKNET_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/timm-sknet}"
venv="$venv_root/venv-$key"
if [ ! -f "$venv/.complete" ]; then
    echo "Creating $venv (torch, timm, ...: a few minutes the first time)" >&2
    rm -rf "$venv"
    mkdir -p "$venv_root"
    "$python_bin" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
    "$venv/bin/python" -m pip install -q "$repo_root[test]"
    touch "$venv/.complete"
fi
# Always (re)link this checkout: fast, and a reused environment never runs another clone's code.
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo_root" >/dev/null
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
