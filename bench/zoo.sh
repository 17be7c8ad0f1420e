#!/usr/bin/env bash
# The classic zoo on ML-1M and Amazon Beauty: leave-one-out, full ranking over all items,
# seen items excluded, seed 42. Settings were chosen on the validation stage
# (bench/tune_all.sh → docs/results/tuning/*.json); Mult-VAE and CFGAN use published
# defaults (CFGAN: fewer epochs on Beauty, where one epoch is slow on two cores).
# Results: docs/results/<data>/results.{json,md}, comparison.png; summary: bench/make_docs.py.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/bench}
DR=${DR:-.venv/bin/directrec}
R=docs/results
ONLY=${1:-all}

if [ "$ONLY" = all ] || [ "$ONLY" = ml1m ]; then
$DR benchmark --db $OUT/ml1m.duckdb --split loo --k 10,20 --seed 42 --out $R/ml1m --no-progress \
  --models pop,itemknn,userknn,content,ease,als,bpr,multvae,cfgan \
  --set ease.l2=300 \
  --set itemknn.neighbours=50 --set itemknn.shrink=10 \
  --set userknn.neighbours=25 --set userknn.similarity=pearson \
  --set content.half_life=5 \
  --set als.factors=128 --set als.regularization=1.0 --set als.alpha=1 \
  --set bpr.learning_rate=0.01 --set bpr.regularization=0.001
fi

if [ "$ONLY" = all ] || [ "$ONLY" = beauty ]; then
$DR benchmark --db $OUT/beauty.duckdb --split loo --k 10,20 --max-history 20 --seed 42 --out $R/beauty --no-progress \
  --models pop,itemknn,userknn,content,ease,als,bpr,multvae,cfgan \
  --set ease.l2=BEAUTY_L2 \
  --set itemknn.neighbours=BEAUTY_IKNN_K --set itemknn.shrink=BEAUTY_IKNN_S \
  --set userknn.neighbours=BEAUTY_UKNN_K \
  --set als.factors=BEAUTY_ALS_F --set als.regularization=BEAUTY_ALS_R --set als.alpha=BEAUTY_ALS_A \
  --set bpr.learning_rate=BEAUTY_BPR_LR \
  --set cfgan.epochs=20
fi
