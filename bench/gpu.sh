#!/usr/bin/env bash
# GPU runs of the generative ID head (sasrec-ce, full-softmax CE) to convergence: early
# stopping on validation NDCG@10 (every 5 epochs, patience 6), leave-one-out, full ranking,
# seed 42. They ran on the device tool's H100 (one NVIDIA H100 80GB HBM3, 16 CPU cores,
# torch 2.11+cu130, Python 3.12) with the stores from bench/prepare.sh carried along and
# duckdb installed from a wheel; the results JSON records the accelerator.
#   bash bench/gpu.sh [ml1m|beauty|beauty-context|tests|sweep|all]   (on a machine with CUDA)
# `ml1m`, `beauty` and `sweep` ran before --max-history became an input-context cap (it
# changes nothing on ML-1M, which has no cap).
# `sweep` is the validation-only architecture choice for ML-1M: the variant with the best
# best_valid_ndcg@10 is the one reported; test figures of all variants are kept beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/bench}
DR=${DR:-.venv/bin/directrec}
R=docs/results/gpu
WHAT=${1:-all}
run() { [ "$WHAT" = all ] || [ "$WHAT" = "$1" ]; }
B="$DR benchmark --split loo --k 10,20 --seed 42 --no-progress --models sasrec-ce --set device=cuda --set max_minutes=0"
ML="$B --db $OUT/ml1m.duckdb --set max_len=200 --set epochs=1000 --set eval_every=5 --set patience=6"

if run ml1m; then
  $ML --out $R/ml1m-sasrec-ce --set max_minutes=4.5
fi
if run beauty; then
  $B --db $OUT/beauty.duckdb --max-history 20 --out $R/beauty-sasrec-ce --set max_len=20 \
    --set dropout=0.5 --set lr=2e-3 --set epochs=1000 --set eval_every=2 --set patience=5 \
    --set max_minutes=3
fi
if run beauty-context; then  # the same, after --max-history became an input-context cap
  $B --db $OUT/beauty.duckdb --max-history 20 --out $R/beauty-sasrec-ce-context --set max_len=20 \
    --set dropout=0.5 --set lr=2e-3 --set epochs=1000 --set eval_every=2 --set patience=5 \
    --set max_minutes=2.4
fi
if run tests; then  # the CUDA tests (they skip on machines without one)
  .venv/bin/pytest -q tests/models/test_device.py
fi
if run sweep; then
  mkdir -p $R/ml1m-sweep
  for v in "drop01 dropout=0.1" "dim128 dim=128" "layers3 layers=3" \
           "l3d01 layers=3 dropout=0.1" "l4 layers=4"; do
    set -- $v; name=$1; shift
    $ML --out out/gpu-$name --set max_minutes=2.6 $(printf -- '--set %s ' "$@")
    cp out/gpu-$name/results.json $R/ml1m-sweep/$name.json
  done
fi
