#!/usr/bin/env bash
# Every figure a shipped recipe quotes, reproduced through the product alone: `directrec
# benchmark --recipe NAME` (the recipe's model beside its anchors, under its protocol) and
# `--protocol cold-items | new-users`. Nothing here fits or rewrites a model. CKPT=DIR keeps
# per-epoch checkpoints of the long sequence-baseline runs there, so a rerun resumes. Needs
# bench/prepare.sh first (and `make setup`); results land in docs/results/recipes/.
#   bash bench/recipes.sh [ml100k|ml100k-seq|ml100k-sem-default|ml1m|beauty-id|beauty-sem|
#                          beauty-cold|ml1m-new-users|beauty-sem-default|ml1m-sem-default|
#                          ml1m-default|beauty-seq|beauty-gru4rec|beauty-bert4rec|
#                          sports-gru4rec|sports-bert4rec|beauty-bert4rec-amazon|
#                          sports-bert4rec-amazon|ml1m-gru4rec|ml1m-bert4rec|
#                          ml100k-llm|ml100k-classic|ml1m-classic|all] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/bench}
DR=${DR:-.venv/bin/directrec}
R=docs/results/recipes
WHAT=${1:-all}
SEED=${2:-42}
run() { [ "$WHAT" = all ] || [ "$WHAT" = "$1" ]; }
mkdir -p "$OUT" "$R"
if run ml100k; then  # the sasrec-ce defaults on MovieLens-100K
  [ -f "$OUT/ml100k.duckdb" ] || $DR ingest --dataset ml-100k --db "$OUT/ml100k.duckdb"
  $DR benchmark --recipe sasrec-ce --db "$OUT/ml100k.duckdb" --seed "$SEED" --no-progress \
    --out "$R/ml100k-sasrec-ce-seed$SEED"
fi
if run ml100k-seq; then  # the gru4rec and bert4rec defaults on MovieLens-100K
  # threads=1 (a run setting, not part of the model): measured on a shared, busy 2-core
  # machine, where two threads' per-step barriers stalled the GRU forty-fold
  [ -f "$OUT/ml100k.duckdb" ] || $DR ingest --dataset ml-100k --db "$OUT/ml100k.duckdb"
  for m in gru4rec bert4rec; do
    $DR benchmark --recipe "$m" --db "$OUT/ml100k.duckdb" --seed "$SEED" --no-progress \
      --set threads=1 --out "$R/ml100k-$m-seed$SEED"
  done
fi
if run ml1m; then  # the ML-1M AdamW recipe on whole histories
  $DR benchmark --recipe ml1m-sasrec-ce --db "$OUT/ml1m.duckdb" --seed "$SEED" --no-progress \
    --out "$R/ml1m-sasrec-ce-seed$SEED"
fi
if run beauty-id; then  # the ID head on Amazon-style 5-core data
  $DR benchmark --recipe amazon-5core --db "$OUT/beauty.duckdb" --seed "$SEED" --no-progress \
    --out "$R/beauty-amazon-5core-seed$SEED"
fi
if run beauty-sem; then  # the semantic-ID hybrid on Beauty (its ID weight chosen on validation)
  $DR benchmark --recipe beauty-semantic-id --db "$OUT/beauty.duckdb" --seed "$SEED" \
    --no-progress --out "$R/beauty-semantic-id-seed$SEED"
fi
if run ml100k-sem-default; then  # semantic-id with no flags on MovieLens-100K
  [ -f "$OUT/ml100k.duckdb" ] || $DR ingest --dataset ml-100k --db "$OUT/ml100k.duckdb"
  $DR benchmark --recipe semantic-id --db "$OUT/ml100k.duckdb" --seed "$SEED" --no-progress \
    --out "$R/ml100k-semantic-id-defaults-seed$SEED"
fi
if run beauty-sem-default; then  # semantic-id with no flags (its packaged defaults) on Beauty
  $DR benchmark --recipe semantic-id --db "$OUT/beauty.duckdb" --seed "$SEED" --no-progress \
    --out "$R/beauty-semantic-id-defaults-seed$SEED"
fi
if run ml1m-sem-default; then  # semantic-id with no flags on MovieLens-1M
  $DR benchmark --recipe semantic-id --db "$OUT/ml1m.duckdb" --seed "$SEED" --no-progress \
    --out "$R/ml1m-semantic-id-defaults-seed$SEED"
fi
if run ml100k-llm; then  # the built-in LM on MovieLens-100K, fixed epochs, no budget
  [ -f "$OUT/ml100k.duckdb" ] || $DR ingest --dataset ml-100k --db "$OUT/ml100k.duckdb"
  $DR benchmark --recipe ml100k-llm --db "$OUT/ml100k.duckdb" --seed "$SEED" --no-progress \
    --out "$R/ml100k-llm-seed$SEED"
fi
if run ml1m-default; then  # sasrec-ce with no flags on MovieLens-1M (the ID head semantic-id is held to)
  $DR benchmark --recipe sasrec-ce --db "$OUT/ml1m.duckdb" --seed "$SEED" --no-progress \
    --out "$R/ml1m-sasrec-ce-defaults-seed$SEED"
fi
for m in gru4rec bert4rec; do
  if run beauty-seq || run "beauty-$m"; then  # the gru4rec and bert4rec defaults on Beauty
    $DR benchmark --recipe "$m" --db "$OUT/beauty.duckdb" --seed "$SEED" --no-progress \
      ${CKPT:+--set "$m.checkpoint_dir=$CKPT/beauty-$m-seed$SEED"} --out "$R/beauty-$m-seed$SEED"
  fi
  if run "sports-$m"; then  # the same on Sports, one thread each (the two run side by side)
    $DR benchmark --recipe "$m" --db "$OUT/sports.duckdb" --seed "$SEED" --no-progress \
      --set threads=1 ${CKPT:+--set "$m.checkpoint_dir=$CKPT/sports-$m-seed$SEED"} \
      --out "$R/sports-$m-seed$SEED"
  fi
done
for d in beauty sports; do
  if run "$d-bert4rec-amazon"; then  # BERT4Rec's Amazon recipe, one thread (Beauty and Sports side by side)
    $DR benchmark --recipe bert4rec-amazon --db "$OUT/$d.duckdb" --seed "$SEED" --no-progress \
      --set threads=1 ${CKPT:+--set "bert4rec.checkpoint_dir=$CKPT/$d-bert4rec-amazon-seed$SEED"} \
      --out "$R/$d-bert4rec-amazon-seed$SEED"
  fi
done
for m in gru4rec bert4rec; do
  if run "ml1m-$m"; then  # the gru4rec / bert4rec defaults on MovieLens-1M, one thread each
    # (the two run side by side on a 2-core machine)
    $DR benchmark --recipe "$m" --db "$OUT/ml1m.duckdb" --seed "$SEED" --no-progress \
      --set threads=1 ${CKPT:+--set "$m.checkpoint_dir=$CKPT/ml1m-$m-seed$SEED"} \
      --out "$R/ml1m-$m-seed$SEED"
  fi
done
for d in ml100k ml1m; do
  if run "$d-classic"; then  # the multvae and cfgan defaults (the shared epoch loop), one thread
    [ -f "$OUT/$d.duckdb" ] || [ "$d" != ml100k ] || $DR ingest --dataset ml-100k --db "$OUT/$d.duckdb"
    for m in multvae cfgan; do
      $DR benchmark --recipe "$m" --db "$OUT/$d.duckdb" --seed "$SEED" --no-progress \
        --set threads=1 --out "$R/$d-$m-seed$SEED"
    done
  fi
done
if run beauty-cold; then  # TIGER's cold-items protocol on Beauty: the hybrid and its gate
  $DR benchmark --recipe coldstart --db "$OUT/beauty.duckdb" --seed "$SEED" --no-progress \
    --protocol cold-items --out "$R/beauty-cold-items-seed$SEED"
fi
if run ml1m-new-users; then  # the new-user curve on ML-1M (the ID head, its priors)
  $DR benchmark --recipe ml1m-sasrec-ce --db "$OUT/ml1m.duckdb" --seed "$SEED" --no-progress \
    --protocol new-users --models sasrec-ce --out "$R/ml1m-new-users-seed$SEED"
fi
