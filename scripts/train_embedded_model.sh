#!/usr/bin/env bash
# Reproduces the embedded sknet_tiny.synthetic weights (recipe and metrics: weights_card.md) and installs them
# into timm_sknet/hub/weights/. Run from an environment with timm-sknet's dependencies (e.g. after
# `source scripts/env.sh`). One compute thread plus one data worker: both cores of a 2-core machine, and the
# same float summation order on every run of the same torch build and CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-output/sknet_tiny_synthetic}"
export OMP_NUM_THREADS=1
python -m timm_sknet train \
    --model sknet_tiny --img-size 64 \
    --synthetic-classes 6 --synthetic-train-size 8000 --synthetic-val-size 1200 --synthetic-seed 0 \
    --epochs 8 --batch-size 64 --opt adamw --lr 2e-3 --weight-decay 0.05 \
    --sched cosine --warmup-epochs 1 --min-lr 1e-5 --smoothing 0.1 \
    --scale 1 1 --ratio 1 1 --hflip 0.5 --color-jitter 0 \
    --model-ema --model-ema-decay 0.998 --model-ema-warmup \
    --workers 1 --seed 0 --log-interval 25 --output "$out"
dest=timm_sknet/hub/weights/sknet_tiny.synthetic
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
cp -r "$out/model" "$dest"
sha256sum "$dest/model.safetensors"
echo "Now set WEIGHTS_SHA256 in timm_sknet/hub/embedded.py to the digest above."
