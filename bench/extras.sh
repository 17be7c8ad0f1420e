#!/usr/bin/env bash
# The benchmark runs behind the generative-engine, serving and explanation figures in
# docs/benchmarks.md, in the order they ran (each alone on the machine unless the log says
# otherwise). Needs bench/prepare.sh first. Results land in docs/results/.
#   bash bench/extras.sh [beauty-gen|beauty-sem|beauty-sem-hybrid|beauty-sem-idhead|beauty-sem-idhead-b50|beauty-sem-windows|sports-sem-idhead|sports-sem-idhead-45|sports-sem-idhead-reg|sports-sem-idhead-cos|sports-sem-idhead-cos28|sports-beam-blend|sports-beam-proposals|beauty-beam-proposals|sports-gen|sports-gen-ss|sports-gen-cos|users|explain|serve|items|llm|diversity|rerun-rate|archs|serve-models|serve-pinned|scale-out|new-users|new-users-20pct|defaults|ml1m-60|cold-gate|cold-gate-hybrid|cold-gate-place|cold-gate-place-regate|llm-15min|llm-15min-fast|llm-full-size|new-users-beauty|sports-sem|sports-sem-both|all]
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
if run beauty-sem-windows; then  # beauty-sem-idhead-b50's recipe with today's code, trained on each
  # user's last 21 items (`last`, as every causal semantic-ID run before) against the whole
  # history tiled into such windows (`all`: 11 % more training targets on Beauty, the context
  # still ≤ 20); each then gets beauty-beam-proposals' look (beam × ID proposals × weight,
  # chosen on validation)
  for w in last all; do
    $DR benchmark --db $OUT/beauty.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
      --out $R/beauty-sem-windows-$w --no-progress --models semantic-id --set arch=causal \
      --set max_len=20 --set lr=2e-3 --set batch_size=128 --set max_minutes=20 --set eval_every=2 \
      --set item_embedding=true --set id_loss=1.0 --set beam=50 --valid-users 2000 \
      --set windows=$w --save-models $OUT/models/beauty-sem-windows-$w
    $PY bench/beam_blend.py --model $OUT/models/beauty-sem-windows-$w/semantic-id \
      --db $OUT/beauty.duckdb --out $R/beauty-sem-windows-$w/beam-proposals.json \
      --beams 50 --candidates 0,100 --weights 0.5,1,2,4,8,16
  done
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
if run sports-sem-idhead-cos; then  # the Sports hybrid with the learning rate on a half
  # cosine over 20 epochs: the constant-rate 45-minute run peaked at epoch 14 and then
  # oscillated (0.032-0.036) while its training loss kept falling. The model is saved (fit on
  # train only) for bench/beam_blend.py's later looks at the beam width and the ID weight.
  $DR benchmark --db $OUT/sports.duckdb --split loo --k 10,20 --max-history 20 --seed 42 \
    --out $R/sports-sem-idhead-cos --no-progress --models semantic-id --set arch=causal --set max_len=20 \
    --set lr=2e-3 --set lr_decay=cosine --set epochs=20 --set batch_size=128 --set max_minutes=40 \
    --set eval_every=2 --set patience=20 --set codes_from=both --set item_embedding=true \
    --set id_loss=1.0 --set beam=50 --valid-users 2000 --save-models $OUT/models/sports-idhead-cos
fi
if run sports-beam-blend; then  # the saved cosine hybrid: beam width and ID weight chosen after
  # training on 6,000 validation users (the fit chose its weight on 2,000, at beam 50 only)
  $PY bench/beam_blend.py --model $OUT/models/sports-idhead-cos/semantic-id \
    --db $OUT/sports.duckdb --out $R/sports-sem-idhead-cos/beam-blend.json
fi
if run beauty-beam-proposals; then  # the kept Beauty hybrid (beauty-sem-idhead-b50), with
  # the ID head's proposals; session 13 refit that model on a fresh machine with the same
  # command, written to $R/beauty-sem-idhead-b50-rerun, which this look belongs to
  $PY bench/beam_blend.py --model $OUT/models/beauty-idhead-b50/semantic-id \
    --db $OUT/beauty.duckdb --out $R/beauty-sem-idhead-b50-rerun/beam-proposals.json \
    --beams 50 --candidates 0,100 --weights 0.5,1,2,4,8,16 --save $OUT/models/beauty-idhead-tuned
fi
if run sports-beam-proposals; then  # the same saved model, with the ID head's best unseen
  # items joining the beam's candidates (id_candidates), scored as the beam would score
  # them; beam × proposals × weight chosen on the same 6,000 validation users. --save keeps
  # the tuned copy, which `directrec evaluate --model $OUT/models/sports-idhead-tuned` reads
  $PY bench/beam_blend.py --model $OUT/models/sports-idhead-cos/semantic-id \
    --db $OUT/sports.duckdb --out $R/sports-sem-idhead-cos/beam-proposals.json \
    --beams 50,100 --candidates 0,100,200 --weights 0.5,1,2,4,8,16,32 \
    --save $OUT/models/sports-idhead-tuned
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
if run users; then  # new users (held out of training); also trains the model served below
  $PY bench/coldstart.py users --db $OUT/ml1m.duckdb --minutes 10 --save $OUT/models/ml1m-sasrec-ce
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
if run new-users; then  # popularity blend by history length, learned on held-out validation users
  $PY bench/coldstart.py users --db $OUT/ml1m.duckdb --minutes 4
fi
if run new-users-20pct; then  # the same with 20 % of users held out: twice the tune and test users
  $PY bench/coldstart.py users --db $OUT/ml1m.duckdb --minutes 4 --holdout-users 0.2 \
    --out $R/coldstart-20pct
fi
if run defaults; then  # the generators with default settings on MovieLens-100K (target ≤ 5 min)
  $PY bench/defaults.py --db $OUT/ml100k.duckdb
fi
if run items; then  # TIGER cold-start protocol on Beauty (since session 5 it also learns the cold gate)
  $PY bench/coldstart.py items --db $OUT/beauty.duckdb --max-history 20 --minutes 10 --set batch_size=256
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
if run cold-gate; then  # cold items: the semantic-ID model with its cold gate (Beauty)
  $PY bench/coldstart.py items --db $OUT/beauty.duckdb --max-history 20 --minutes 10 --set batch_size=256
fi
if run cold-gate-hybrid; then  # cold items with the ID + semantic hybrid (the Beauty §1 recipe):
  # cold items are never the ID head's negatives; the gate also tries the ID head's view
  $PY bench/coldstart.py items --db $OUT/beauty.duckdb --max-history 20 --minutes 20 --set arch=causal \
    --set lr=2e-3 --set batch_size=128 --set item_embedding=true --set id_loss=1.0 --set beam=50 \
    --tag hybrid
fi
if run cold-gate-place; then  # the same hybrid with the gate's second family, reserved slots at
  # a learned rank (bench/coldstart.py --load out/bench/models/beauty-cold-hybrid refits gates only)
  $PY bench/coldstart.py items --db $OUT/beauty.duckdb --max-history 20 --minutes 20 --set arch=causal \
    --set lr=2e-3 --set batch_size=128 --set item_embedding=true --set id_loss=1.0 --set beam=50 \
    --save $OUT/models/beauty-cold-hybrid --tag place
fi
if run cold-gate-place-regate; then  # the model cold-gate-place trained and saved, its gate refitted
  # with the score family's bias grid reaching below every list's 10th log-probability
  $PY bench/coldstart.py items --db $OUT/beauty.duckdb --max-history 20 --set arch=causal \
    --set lr=2e-3 --set batch_size=128 --set item_embedding=true --set id_loss=1.0 --set beam=50 \
    --load $OUT/models/beauty-cold-hybrid --tag place-regate
fi
if run llm-15min; then  # built-in LM on ML-100K within a 15-minute budget, best epoch on validation
  $PY bench/llm.py --db $OUT/ml100k.duckdb --users 300 --epochs 100 --minutes 15 \
    --valid-users 200 --eval-every 3 --tag 15min
fi
if run llm-full-size; then  # the README's 0.5B recipe at full size (random weights with
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
if run new-users-beauty; then  # the new-user curve on Beauty (ID head with its Beauty settings)
  $PY bench/coldstart.py users --db $OUT/beauty.duckdb --minutes 6 --noun products \
    --set max_len=50 --set loss=ce --set dropout=0.5 --set bf16=false --set lr=2e-3 \
    --set batch_size=128
fi
