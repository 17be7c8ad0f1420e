#!/usr/bin/env bash
# GPU runs of the generative ID head (sasrec-ce, full-softmax CE) to convergence: early
# stopping on validation NDCG@10 (every 5 epochs, patience 6), leave-one-out, full ranking,
# seed 42. They ran on the device tool's H100 (one NVIDIA H100 80GB HBM3, 16 CPU cores,
# torch 2.11+cu130, Python 3.12) with the stores from bench/prepare.sh carried along and
# duckdb installed from a wheel; the results JSON records the accelerator.
#   bash bench/gpu.sh [ml1m|beauty|beauty-context|tests|sweep|cpu-recipes|beauty-sem|ml1m-batches|beauty-sem2|all]
#   (on a machine with CUDA)
# `ml1m`, `beauty` and `sweep` ran before --max-history became an input-context cap (it
# changes nothing on ML-1M, which has no cap).
# `sweep` is the validation-only architecture choice for ML-1M: the variant with the best
# best_valid_ndcg@10 is the one reported; test figures of all variants are kept beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
STORES=${STORES:-out/bench}  # (not OUT: the device tool sets OUT)
DR=${DR:-.venv/bin/directrec}
R=docs/results/gpu
WHAT=${1:-all}
run() { [ "$WHAT" = all ] || [ "$WHAT" = "$1" ]; }
B="$DR benchmark --split loo --k 10,20 --seed 42 --no-progress --models sasrec-ce --set device=cuda --set max_minutes=0"
ML="$B --db $STORES/ml1m.duckdb --set max_len=200 --set epochs=1000 --set eval_every=5 --set patience=6"

if run ml1m; then
  $ML --out $R/ml1m-sasrec-ce --set max_minutes=4.5
fi
if run beauty; then
  $B --db $STORES/beauty.duckdb --max-history 20 --out $R/beauty-sasrec-ce --set max_len=20 \
    --set dropout=0.5 --set lr=2e-3 --set epochs=1000 --set eval_every=2 --set patience=5 \
    --set max_minutes=3
fi
if run beauty-context; then  # the same, after --max-history became an input-context cap
  $B --db $STORES/beauty.duckdb --max-history 20 --out $R/beauty-sasrec-ce-context --set max_len=20 \
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

# Session 6. Runs in parallel on the one GPU (each capped by epochs/minutes), so their wall
# times are not speed figures; only the validation curves and the test metrics are read.
par() {  # par DIR "command" "name setting ..." ...: one benchmark per variant, all at once
  local dir=$1 cmd=$2; shift 2; mkdir -p $dir
  for v in "$@"; do
    set -- $v; local name=$1; shift
    OMP_NUM_THREADS=1 $cmd --out $dir/$name $(printf -- '--set %s ' "$@") > $dir/$name.log 2>&1 &
  done
  wait
}
REC="$ML --valid-users 2000 --set eval_every=2 --set patience=15 --set epochs=120"
SEM="$DR benchmark --split loo --k 10,20 --seed 42 --no-progress --models semantic-id \
  --db $STORES/beauty.duckdb --max-history 20 --valid-users 2000 --set device=cuda \
  --set max_len=20 --set eval_every=2 --set patience=5"
if run cpu-recipes; then  # ML-1M recipes for the 60-minute CPU budget, chosen on the
  # validation curve at the epoch count the CPU affords (docs/results/epoch-cost)
  par $R/ml1m-cpu-recipes "$REC --set max_minutes=5" "a0 attn_dropout=0" "base seed=42" \
    "lr2 lr=2e-3" "lr3 lr=3e-3" "a0d4 attn_dropout=0 dropout=0.4" \
    "a0d4lr2 attn_dropout=0 dropout=0.4 lr=2e-3" "mlp1 mlp_ratio=1" "l3lr2 layers=3 lr=2e-3"
fi
if run beauty-sem; then  # semantic-ID head on Beauty to convergence: variants chosen on validation
  par $R/beauty-sem "$SEM --set epochs=200 --set max_minutes=5" "causal arch=causal" \
    "causal-d3 arch=causal dropout=0.3" "encdec arch=encdec" \
    "causal-d3-l4 arch=causal dropout=0.3 enc_layers=4"
fi
if run ml1m-batches; then  # random vs length-grouped batches, per epoch (same recipes as above)
  par $R/ml1m-cpu-recipes "$REC --set max_minutes=6.5" "rb-a0 attn_dropout=0 length_batches=false" \
    "rb-base length_batches=false" "rb-lr2 lr=2e-3 length_batches=false" \
    "rb-l3lr2 layers=3 lr=2e-3 length_batches=false" "l3lr2a0 layers=3 lr=2e-3 attn_dropout=0"
fi
if run beauty-sem2; then  # the causal semantic-ID head: faster schedules, chosen on validation
  par $R/beauty-sem "$SEM --set epochs=300 --set max_minutes=7" "causal-lr2 arch=causal lr=2e-3" \
    "causal-lr2-d05 arch=causal lr=2e-3 dropout=0.05" \
    "causal-lr2-b128 arch=causal lr=2e-3 batch_size=128" "causal-lr3 arch=causal lr=3e-3"
fi
