#!/usr/bin/env bash
# Sets up the environment (scripts/env.sh) and runs the package's main job.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec python -m timm_sknet "$@"
