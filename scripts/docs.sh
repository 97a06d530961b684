#!/usr/bin/env bash
# Sets up the environment (scripts/env.sh) and serves the documentation site at http://127.0.0.1:8000.
# Extra arguments go to `mkdocs serve`; `bash scripts/docs.sh build` writes the site to site/ instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export NO_MKDOCS_2_WARNING=1  # Material's notice about its successor, printed on every build
if [ "${1:-}" = build ]; then
    exec mkdocs build --strict "${@:2}"
fi
exec mkdocs serve "$@"
