#!/usr/bin/env bash
# Ingest the benchmark copies in ../shared/data (see each SOURCE.md) into DuckDB stores.
#   ML-1M: complete chronological sequences (6,040 users, 3,706 items), titles + genres.
#   Beauty: S3-Rec/P5 Beauty.txt (22,363 users, 12,101 items), titles + brand/category attributes.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-out/bench}
DR=${DR:-.venv/bin/directrec}
mkdir -p "$OUT"
rm -f "$OUT/ml1m.duckdb" "$OUT/beauty.duckdb"
$DR ingest --format sequence --interactions "$DATA/ml-1m/sequences.txt" \
    --items "$DATA/ml-1m/movies.dat" --db "$OUT/ml1m.duckdb"
$DR ingest --format sequence --interactions "$DATA/amazon-beauty/Beauty.txt" \
    --items "$DATA/amazon-beauty/items.csv" --item-columns categories=attributes \
    --db "$OUT/beauty.duckdb"
