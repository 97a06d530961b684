#!/usr/bin/env bash
# Sets up the environment (scripts/env.sh) and runs the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec python -m pytest "$@"
