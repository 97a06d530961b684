#!/usr/bin/env bash
# Runs every runner of `timm-sknet bench` and writes benchmarks/results/<runner>.{json,md}: about half an hour on
# 2 CPU cores. Run nothing else meanwhile. Extra arguments go to every run (e.g. --runs 5, --device cuda).
# serve-load also needs LitServe: pip install -r benchmarks/requirements.txt. It alone, as one line:
#   timm-sknet bench serve-load --out benchmarks/results/serve_load.md
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
for what in inference eager backbone concurrency int8-accuracy serve serve-load; do
    timm-sknet bench "$what" --out "benchmarks/results/${what//-/_}" "$@"
done
