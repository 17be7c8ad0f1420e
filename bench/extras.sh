#!/usr/bin/env bash
# The benchmark runs behind the generative-engine, serving and explanation figures in
# docs/benchmarks.md, in the order they ran (each alone on the machine unless the log says
# otherwise). Needs bench/prepare.sh first. Results land in docs/results/. The runs that
# refitted or rewrote models outside the product (ID-weight and cold-gate sweeps) are gone:
# bench/recipes.sh reproduces their figures through `directrec benchmark --recipe` and
# `--protocol`; their JSON stays in docs/results as history.
#   bash bench/extras.sh [beauty-gen|beauty-sem|beauty-sem-hybrid|beauty-sem-idhead|beauty-sem-idhead-b50|sports-sem-idhead|sports-sem-idhead-45|sports-sem-idhead-reg|sports-sem-idhead-cos28|sports-gen|sports-gen-ss|sports-gen-cos|explain|serve|llm|diversity|rerun-rate|archs|serve-models|serve-pinned|scale-out|defaults|ml1m-60|llm-15min|llm-15min-fast|llm-full-size|sports-sem|sports-sem-both|all]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/bench}
DR=${DR:-.venv/bin/directrec}
PY=${PY:-.venv/bin/python}
R=docs/results
WHAT=${1:-all}
run() { [ "$WHAT" = all ] || [ "$WHAT" = "$1" ]; }

if run beauty-gen; then  # generative ID head on Beauty (history ≤ 20), 15-minute budget
  bash bench/zoo.sh beauty-gen
fi
if run beauty-sem; then  # semantic-ID head on Beauty, 20-minute budget, the recipe chosen on
  # validation on the GPU (docs/results/gpu/beauty-sem)
  $DR benchmark --db $OUT/beauty.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/beauty-sem --no-progress --models semantic-id --set arch=causal --set max_len=20 \
    --set lr=2e-3 --set batch_size=128 --set max_minutes=20 --set eval_every=2 --valid-users 2000
fi
if run beauty-sem-hybrid; then  # the same with the ID + semantic item embedding on the input
  $DR benchmark --db $OUT/beauty.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/beauty-sem-hybrid --no-progress --models semantic-id --set arch=causal \
    --set max_len=20 --set lr=2e-3 --set batch_size=128 --set max_minutes=20 --set eval_every=2 \
    --set item_embedding=true --valid-users 2000
fi
if run beauty-sem-idhead; then  # the hybrid on both sides: the item embedding on the input and
  # the ID head on the output (the beam rescored by it, its weight chosen on validation)
  $DR benchmark --db $OUT/beauty.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/beauty-sem-idhead --no-progress --models semantic-id --set arch=causal \
    --set max_len=20 --set lr=2e-3 --set batch_size=128 --set max_minutes=20 --set eval_every=2 \
    --set item_embedding=true --set id_loss=1.0 --valid-users 2000
fi
if run beauty-sem-idhead-b50; then  # the same with a 50-wide beam for the ID head to rescore
  # (the figure reported against RPG; the fitted model is kept for later looks)
  $DR benchmark --db $OUT/beauty.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/beauty-sem-idhead-b50 --no-progress --models semantic-id --set arch=causal \
    --set max_len=20 --set lr=2e-3 --set batch_size=128 --set max_minutes=20 --set eval_every=2 \
    --set item_embedding=true --set id_loss=1.0 --set beam=50 --valid-users 2000 \
    --save-models $OUT/models/beauty-idhead-b50
fi
if run sports-sem-idhead; then  # Sports: the Beauty hybrid recipe, codes from text + interactions
  $DR benchmark --db $OUT/sports.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/sports-sem-idhead --no-progress --models semantic-id --set arch=causal --set max_len=20 \
    --set lr=2e-3 --set batch_size=128 --set max_minutes=20 --set eval_every=2 \
    --set codes_from=both --set item_embedding=true --set id_loss=1.0 --set beam=50 --valid-users 2000
fi
if run sports-sem-idhead-45; then  # the same Sports hybrid with a 45-minute budget: the
  # 20-minute run stopped by its budget with validation still rising
  $DR benchmark --db $OUT/sports.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/sports-sem-idhead-45 --no-progress --models semantic-id --set arch=causal --set max_len=20 \
    --set lr=2e-3 --set batch_size=128 --set max_minutes=45 --set eval_every=2 \
    --set codes_from=both --set item_embedding=true --set id_loss=1.0 --set beam=50 --valid-users 2000
fi
if run sports-sem-idhead-reg; then  # the Sports hybrid regularised: the 45-minute run peaked at
  # epoch 14 while its training loss kept falling (overfitting), so dropout 0.3, 30 minutes
  $DR benchmark --db $OUT/sports.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/sports-sem-idhead-reg --no-progress --models semantic-id --set arch=causal --set max_len=20 \
    --set lr=2e-3 --set batch_size=128 --set max_minutes=30 --set eval_every=2 --set dropout=0.3 \
    --set codes_from=both --set item_embedding=true --set id_loss=1.0 --set beam=50 --valid-users 2000
fi
if run sports-sem-idhead-cos28; then  # the same over 28 epochs: at 20 the validation NDCG was
  # still rising (best at epoch 18, 0.0383) when the rate reached zero
  $DR benchmark --db $OUT/sports.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/sports-sem-idhead-cos28 --no-progress --models semantic-id --set arch=causal \
    --set max_len=20 --set lr=2e-3 --set lr_decay=cosine --set epochs=28 --set batch_size=128 \
    --set max_minutes=60 --set eval_every=2 --set patience=28 --set codes_from=both \
    --set item_embedding=true --set id_loss=1.0 --set beam=50 --valid-users 2000
fi
if run sports-gen; then  # the ID head (sasrec-ce) on Sports with its Beauty settings: our own
  # SASRec baseline on the split the semantic-ID runs use
  $DR benchmark --db $OUT/sports.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/sports-gen --no-progress --models sasrec-ce --set max_len=20 --set dropout=0.5 \
    --set lr=2e-3 --set batch_size=128 --set max_minutes=15 --set eval_every=2 --valid-users 4000
fi
if run sports-gen-ss; then  # the ID head on Sports with the recipe eSASRec's repository lists
  # for its SASRec-SS row on this dataset (configs/paper/loo/s3_vanilla.yaml: 256 factors,
  # 1 block, 1 head, dropout 0.2, sampled softmax over 256 uniform negatives)
  $DR benchmark --db $OUT/sports.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/sports-gen-ss --no-progress --models sasrec-ce --set max_len=20 --set dim=256 \
    --set layers=1 --set heads=1 --set dropout=0.2 --set loss=sampled --set negatives=256 \
    --set lr=1e-3 --set batch_size=128 --set max_minutes=25 --set eval_every=2 --set patience=5 \
    --valid-users 4000
fi
if run sports-gen-cos; then  # the Sports ID head (sasrec-ce, its Beauty settings) with the learning
  # rate on a half cosine over the 30 epochs its 15-minute budget affords (~28 s each)
  $DR benchmark --db $OUT/sports.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/sports-gen-cos --no-progress --models sasrec-ce --set max_len=20 --set dropout=0.5 \
    --set lr=2e-3 --set lr_decay=cosine --set epochs=30 --set batch_size=128 --set max_minutes=16 \
    --set eval_every=2 --set patience=15 --valid-users 4000
fi
if run sports-sem; then  # semantic-ID head on Sports (attribute tokens as text), the recipe
  # chosen on Beauty's validation (docs/results/gpu/beauty-sem), 10-minute CPU budget
  $DR benchmark --db $OUT/sports.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/sports-sem --no-progress --models semantic-id --set arch=causal --set max_len=20 \
    --set lr=2e-3 --set batch_size=128 --set max_minutes=10 --set eval_every=2 --valid-users 2000
fi
if run sports-sem-both; then  # the same, codes from text and collaborative vectors side by side
  # (this copy's item text is anonymous attribute tokens: 82 % of text codes collide)
  $DR benchmark --db $OUT/sports.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/sports-sem-both --no-progress --models semantic-id --set arch=causal --set max_len=20 \
    --set lr=2e-3 --set batch_size=128 --set max_minutes=10 --set eval_every=2 \
    --set codes_from=both --valid-users 2000
fi
if run explain; then
  $PY bench/explain.py --model $OUT/models/ml1m-sasrec-ce --db $OUT/ml1m.duckdb --users 500 --window 50
fi
if run serve; then
  rm -rf $OUT/registry-ml1m $OUT/registry-ml100k-sem
  $DR publish --model $OUT/models/ml1m-sasrec-ce --registry $OUT/registry-ml1m
  $DR train semantic-id --db $OUT/ml100k.duckdb --out $OUT/models/ml100k-semantic \
    --set arch=causal --set max_minutes=4 --set eval_every=2 --valid-users 500
  $DR publish --model $OUT/models/ml100k-semantic --registry $OUT/registry-ml100k-sem
  S="$PY bench/serve.py --out $R/serve"
  $S rate --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb --rate 300 --seconds 30 --tag id-ml1m
  $S rate --model $OUT/registry-ml100k-sem --db $OUT/ml100k.duckdb --rate 50 --seconds 30 --tag semantic-ml100k
  $S overload --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb --rate 3000 --seconds 60 \
    --baseline-p99 "$($PY -c "import json;print(json.load(open('$R/serve/rate-id-ml1m.json'))['ok']['p99_ms']/1000)")"
  $S fuzz --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb --cases 1000
  $S kill9 --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb --rounds 20
  $DR train ease --db $OUT/ml1m.duckdb --out $OUT/models/ml1m-ease --set l2=300
  $DR publish --model $OUT/models/ml1m-ease --registry $OUT/registry-ml1m --no-current
  $S swaps --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb --swaps 200 --rate 100 --seconds 60
fi
if run serve-models; then  # the models served (and explained) since the serving-load issue
  $DR train sasrec-ce --db $OUT/ml1m.duckdb --out $OUT/models/ml1m-sasrec-ce --set max_len=200 \
    --set loss=sampled --set negatives=2048 --set lr=2e-3 --set batch_size=64 --set max_minutes=4 --set eval_every=2
  $DR train semantic-id --db $OUT/ml100k.duckdb --out $OUT/models/ml100k-semantic \
    --set max_minutes=4 --set eval_every=2 --valid-users 500
  $PY bench/explain.py --model $OUT/models/ml1m-sasrec-ce --db $OUT/ml1m.duckdb --users 500 --window 50
fi
if run serve-pinned; then  # serving targets: server pinned to core 0, load generator to core 1
  make bench-tools
  rm -rf $OUT/registry-ml1m $OUT/registry-ml100k-sem
  $DR publish --model $OUT/models/ml1m-sasrec-ce --registry $OUT/registry-ml1m
  $DR publish --model $OUT/models/ml100k-semantic --registry $OUT/registry-ml100k-sem
  P="--server-core 0 --client-core 1"
  S="$PY bench/serve.py --out $R/serve"
  $S wrk --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb $P --connections 1,2,4,8,12,16 --seconds 15 --tag id-ml1m
  $S wrk --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb $P --connections 1,4,8,16,32 --seconds 15 \
    --users 1000 --list-cache 100000 --tag id-ml1m-cache
  $S rate --model $OUT/registry-ml100k-sem --db $OUT/ml100k.duckdb $P --rate 50 --seconds 30 --tag semantic-ml100k-pinned
  # 10× overload (3,000 req/s against the 300 req/s target) after a baseline at 300 req/s,
  # paced wrk; admission bound 16 ≈ throughput (~500 req/s) × latency budget (~30 ms)
  $S overload_wrk --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb $P --rate 3000 --baseline-rate 300 \
    --seconds 60 --max-inflight 16 --tag pinned
  $S fuzz --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb --cases 1000
  [ -d $OUT/models/ml1m-ease ] || $DR train ease --db $OUT/ml1m.duckdb --out $OUT/models/ml1m-ease --set l2=300
  $DR publish --model $OUT/models/ml1m-ease --registry $OUT/registry-ml1m --no-current
  $S swaps --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb $P --swaps 200 --rate 100 --seconds 60 \
    --max-inflight 16 --tag pinned
  $S swaps --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb $P --swaps 200 --rate 100 --seconds 60 --tag pinned-bound64
fi
if run scale-out; then  # PostgreSQL ingest, semantic-ID generation 1 vs 2 processes, service workers
  $PY bench/scale.py ingest --store postgres
  $PY bench/scale.py generate --db $OUT/ml100k.duckdb --model $OUT/models/ml100k-semantic --tag semantic-ml100k
  for n in 1 2; do
    $PY bench/serve.py --out $R/serve wrk --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb --workers $n \
      --connections 2,4,8,16,32 --seconds 15 --p99-ms 100 --tag workers-$n
  done
fi
if run defaults; then  # the generators with default settings on MovieLens-100K (target ≤ 5 min)
  $PY bench/defaults.py --db $OUT/ml100k.duckdb
fi
if run llm; then
  $PY bench/llm.py --db $OUT/ml100k.duckdb --users 300 --epochs 3
fi
if run diversity; then
  $DR benchmark --db $OUT/ml1m.duckdb --split loo --seed 42 --out $R/ml1m-diversity --no-progress \
    --models ease,itemknn,content --set ease.l2=300 --diversity-sweep 0,0.2,0.4,0.6,0.8,0.95
fi
if run archs; then  # semantic-ID head: decoder-only (causal) against TIGER's encoder-decoder
  for arch in causal encdec; do
    $DR benchmark --db $OUT/ml100k.duckdb --split loo --k 10,20 --seed 42 --out $R/ml100k-sem-$arch \
      --no-progress --models semantic-id --set arch=$arch --set max_minutes=3 --set eval_every=2 \
      --valid-users 500
  done
fi
if run rerun-rate; then  # after the beam-widening fix: semantic head again, ID head at half rate
  S="$PY bench/serve.py --out $R/serve"
  $S rate --model $OUT/registry-ml100k-sem --db $OUT/ml100k.duckdb --rate 50 --seconds 30 --tag semantic-ml100k
  $S rate --model $OUT/registry-ml1m --db $OUT/ml1m.duckdb --rate 150 --seconds 30 --tag id-ml1m-150
fi
# Session 5, one after another on a quiet machine.
if run ml1m-60; then  # ID head on ML-1M, SASRec+ recipe within 60 CPU minutes
  bash bench/zoo.sh ml1m-gen-60
fi
if run llm-15min; then  # built-in LM on ML-100K within a 15-minute budget, best epoch on validation
  $PY bench/llm.py --db $OUT/ml100k.duckdb --users 300 --epochs 100 --minutes 15 \
    --valid-users 200 --eval-every 3 --tag 15min
fi
if run llm-full-size; then  # docs/llm.md's 0.5B recipe at full size (random weights with
  # Qwen2.5-0.5B's architecture; no checkpoint can be fetched here): cost, memory, round trip
  $PY bench/llm_full_size.py --db $OUT/ml100k.duckdb --checkpointing
  $PY bench/llm_full_size.py --db $OUT/ml100k.duckdb --steps 1 --users 1 --tag b32-no-checkpointing
fi
if run llm-15min-fast; then  # the same budget, more (shorter) pairs per minute: batch 128,
  # 5 titles in the prompt, 16 pairs per user per epoch, patience 4 validations
  $PY bench/llm.py --db $OUT/ml100k.duckdb --users 300 --epochs 100 --minutes 15 \
    --valid-users 200 --eval-every 3 --batch-size 128 --lr 5e-3 --prompt-items 5 \
    --samples-per-user 16 --patience 4 --tag 15min-fast
fi
