#!/usr/bin/env bash
# Builds the sdist, then the wheel from it (as pip would from PyPI), into OUTDIR, and checks both as PyPI would
# (twine check --strict). Needs only `build` and `twine` in the current Python: the release workflow runs it on a
# bare runner, tests/test_distribution.py in the project's environment with BUILD_ARGS=--no-isolation (offline).
# Usage: bash scripts/build_dists.sh OUTDIR [SOURCE_DIR]
set -euo pipefail
out="${1:?usage: scripts/build_dists.sh OUTDIR [SOURCE_DIR]}"
source_dir="${2:-$(cd "$(dirname "$0")/.." && pwd)}"
# shellcheck disable=SC2086
python -m build ${BUILD_ARGS:-} --outdir "$out" "$source_dir"
python -m twine check --strict "$out"/*
