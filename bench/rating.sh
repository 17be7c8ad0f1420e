#!/usr/bin/env bash
# Explicit-rating task on MovieLens-100K (the bundled copy): RMSE and MAE of biased MF,
# SVD++ and NMF on a random and on a temporal 10 % hold-out, seed 42, default settings.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/bench}
DR=${DR:-.venv/bin/directrec}
[ -f $OUT/ml100k.duckdb ] || $DR ingest --dataset ml-100k --db $OUT/ml100k.duckdb
for split in random temporal; do
  $DR benchmark --db $OUT/ml100k.duckdb --task rating --split $split --seed 42 --no-progress \
    --models biasedmf,svdpp,nmf --out docs/results/rating-ml100k-$split
done
