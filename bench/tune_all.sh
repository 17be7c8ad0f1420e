#!/usr/bin/env bash
# Choose each baseline's settings on the leave-one-out VALIDATION stage (never test).
# Writes docs/results/tuning/<data>-<model>.json (skipped when present; delete to redo).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/bench}
PY=${PY:-.venv/bin/python}
T=docs/results/tuning
mkdir -p $T
tune() {  # data model grid...
  local d=$1 m=$2; shift 2
  local cap=""; [ "$d" = beauty ] && cap="--max-history 20"
  [ -f "$T/$d-$m.json" ] || $PY bench/tune.py --db "$OUT/$d.duckdb" $cap --model "$m" "$@" --out "$T/$d-$m.json"
}
for d in ml1m beauty; do
  if [ $d = ml1m ]; then l2="100,300,500,1000,2000"; else l2="50,100,200,500,1000"; fi
  tune $d ease --grid l2=$l2
  tune $d itemknn --grid neighbours=50,200,1000 --grid shrink=0,10,100
  tune $d userknn --grid neighbours=25,100,400 --grid similarity=cosine,pearson
  tune $d content --grid half_life=0,5,20
  tune $d als --grid factors=64,128 --grid regularization=0.05,1.0 --grid alpha=1,5,20
  tune $d bpr --grid learning_rate=0.01,0.05 --grid regularization=0.01,0.001
  tune $d multvae --grid epochs=50,150
done
