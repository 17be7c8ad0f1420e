#!/usr/bin/env bash
# Ingest the benchmark copies in ../shared/data (see each SOURCE.md) into DuckDB stores.
#   ML-1M: complete chronological sequences (6,040 users, 3,706 items), titles + genres.
#   Beauty: S3-Rec/P5 Beauty.txt (22,363 users, 12,101 items), titles + brand/category attributes.
#   Sports: S3-Rec Sports_and_Outdoors.txt (35,598 users, 18,357 items). Its copy has no
#     titles, only anonymous attribute ids (brand + categories), so an item's text is its
#     attribute tokens ("a12, a2, …") and the words "Sports and Outdoors product": the
#     text encoder sees which items share attributes.
#   bash bench/prepare.sh [ml1m|beauty|sports|all]   (rebuilds only the store named)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-out/bench}
DR=${DR:-.venv/bin/directrec}
PY=${PY:-.venv/bin/python}
WHAT=${1:-all}
case $WHAT in ml1m|beauty|sports|all) ;; *) echo "usage: $0 [ml1m|beauty|sports|all]" >&2; exit 2;; esac
run() { [ "$WHAT" = all ] || [ "$WHAT" = "$1" ]; }
mkdir -p "$OUT"
if run ml1m; then
  rm -f "$OUT/ml1m.duckdb"
  $DR ingest --format sequence --interactions "$DATA/ml-1m/sequences.txt" \
      --items "$DATA/ml-1m/movies.dat" --db "$OUT/ml1m.duckdb"
fi
if run beauty; then
  rm -f "$OUT/beauty.duckdb"
  $DR ingest --format sequence --interactions "$DATA/amazon-beauty/Beauty.txt" \
      --items "$DATA/amazon-beauty/items.csv" --item-columns categories=attributes \
      --db "$OUT/beauty.duckdb"
fi
if run sports; then
  rm -f "$OUT/sports.duckdb"
  $PY - "$DATA/amazon-sports/Sports_and_Outdoors_item2attributes.json" "$OUT/sports-items.csv" <<'PY'
import csv, json, sys
attrs = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["item_id", "title", "attributes"])
    for item in sorted(attrs, key=int):
        w.writerow([item, "Sports and Outdoors product", "|".join(f"a{a}" for a in attrs[item])])
PY
  $DR ingest --format sequence --interactions "$DATA/amazon-sports/Sports_and_Outdoors.txt" \
      --items "$OUT/sports-items.csv" --item-columns categories=attributes \
      --db "$OUT/sports.duckdb"
fi
