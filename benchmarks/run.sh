#!/usr/bin/env bash
# Runs every runner of `timm-sknet bench` and writes benchmarks/results/<runner>.{json,md}: about half an hour on
# 2 CPU cores. Run nothing else meanwhile. Extra arguments go to every run (e.g. --runs 5, --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
for what in inference eager backbone concurrency int8-accuracy serve; do
    timm-sknet bench "$what" --out "benchmarks/results/${what//-/_}" "$@"
done
