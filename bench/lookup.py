"""Point reads of one user's history at growing store sizes (JSON in docs/results/lookup/).

    nice -n 10 python bench/lookup.py [--sizes 100000,1000000,10000000] [--pg-sizes ...]

For each size a synthetic store is written through `directrec.data.store.ingest` (the
real code path; seeded, 50 interactions per user on average, Zipf items). User ids are
zero-padded numbers: stored users are the even ones, so an odd id is unknown yet inside
the store's id range (no min/max statistic can rule it out). Each read is cold for the
service (a user read once, never twice) and goes through `StoreBase.history`, which the
service's HistoryCache calls on a miss. Reported per size and backend: p50/p99 of known
users, of unknown ids, the first read after opening the store; for DuckDB also the CPU
time of the reads (this process, all threads: what a busy machine's scheduling does not
inflate) and the old path (a filter on the interactions table) on fewer reads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from directrec.data.pglocal import LocalPostgres
from directrec.data.schema import RawData, make_interactions
from directrec.data.store import ingest, open_store
from directrec.data.storebase import StoreBase

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "lookup"
PER_USER = 50


def synthetic(rows: int, seed: int = 0) -> RawData:
    """`rows` interactions of rows/50 users (ids u + even 9-digit numbers)."""
    rng = np.random.default_rng(seed)
    n_users = max(rows // PER_USER, 1)
    users = np.char.add("u", np.char.zfill((2 * rng.integers(0, n_users, rows)).astype(str), 9))
    items = np.char.add("i", (rng.zipf(1.3, rows) % 100_000).astype(str))
    inter = make_interactions(
        pd.Series(users),
        pd.Series(items),
        timestamp=pd.Series(rng.integers(0, 10**9, rows)),
    )
    return RawData(inter, None, f"synthetic-{rows}")


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
    }


def timed(read, ids: list[str], cpu: list[float] | None = None) -> list[float]:
    """Wall milliseconds per read; `cpu` collects this process's CPU milliseconds (every
    thread: DuckDB runs in-process), which a busy machine's scheduling does not inflate."""
    out = []
    for u in ids:
        c, t = time.process_time(), time.perf_counter()
        read(u)
        out.append((time.perf_counter() - t) * 1000)
        if cpu is not None:
            cpu.append((time.process_time() - c) * 1000)
    return out


def measure(db: str | Path, rows: int, reads: int, scan_reads: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    n_users = max(rows // PER_USER, 1)
    with open_store(db) as s:
        # With 50 rows a user on average, every even id below 2 * n_users is stored.
        picks = rng.choice(n_users, size=min(reads + 1, n_users), replace=False)
        known = [f"u{2 * int(n):09d}" for n in picks]
        unknown = [f"u{2 * int(n) + 1:09d}" for n in picks[:reads]]
        t = time.perf_counter()
        first = s.history(known[0])
        first_ms = (time.perf_counter() - t) * 1000
        known_cpu: list[float] = []
        unknown_cpu: list[float] = []
        known_ms = timed(s.history, known[1:], known_cpu)  # cold: each user read once
        unknown_ms = timed(s.history, unknown, unknown_cpu)
        assert first is not None and all(s.history(u) for u in known[1:50])
        assert all(s.history(u) is None for u in unknown[:50])
        out = {
            "first_read_ms": round(first_ms, 3),
            "known": percentiles(known_ms),
            "unknown_in_range": percentiles(unknown_ms),
        }
        if not str(db).startswith("postgresql://"):  # PostgreSQL's work is in its server
            out["known_cpu"] = percentiles(known_cpu)
            out["unknown_in_range_cpu"] = percentiles(unknown_cpu)
        if scan_reads:  # the read before this change: a filter over every interaction
            old = lambda u: StoreBase.history(s, u)  # noqa: E731
            out["old_path_known"] = percentiles(timed(old, known[1 : scan_reads + 1]))
            out["old_path_unknown_in_range"] = percentiles(timed(old, unknown[:scan_reads]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--pg-sizes", default="100000,1000000")
    ap.add_argument("--reads", type=int, default=1000)
    ap.add_argument("--scan-reads", type=int, default=50)
    ap.add_argument("--out", type=Path, default=OUT / "lookup.json")
    args = ap.parse_args()
    result: dict = {
        "command": "nice -n 10 python bench/lookup.py " + shlex.join(sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "interactions_per_user": PER_USER,
        "duckdb": [],
        "postgres": [],
    }
    with tempfile.TemporaryDirectory(prefix="lookup-") as tmp:
        for rows in [int(x) for x in args.sizes.split(",") if x]:
            db = Path(tmp) / f"s{rows}.duckdb"
            t = time.perf_counter()
            counts = ingest(db, synthetic(rows))
            build = time.perf_counter() - t
            entry = {"rows": rows, **counts, "build_s": round(build, 1)}
            entry["file_mb"] = round(db.stat().st_size / 1e6, 1)
            entry |= measure(db, rows, args.reads, args.scan_reads)
            result["duckdb"].append(entry)
            print(json.dumps(entry), flush=True)
            db.unlink()
        pg_sizes = [int(x) for x in args.pg_sizes.split(",") if x]
        if pg_sizes:
            with LocalPostgres(
                fsync=False
            ) as pg:  # its own directory (the server may run as postgres)
                for rows in pg_sizes:
                    t = time.perf_counter()
                    counts = ingest(pg.url, synthetic(rows))
                    build = time.perf_counter() - t
                    with open_store(pg.url) as s:
                        s._rows("ANALYZE interactions")
                        plan = s._rows(
                            "EXPLAIN SELECT item_id FROM interactions WHERE user_id = ? "
                            "ORDER BY ts NULLS FIRST, seq",
                            ["u000000002"],
                        )
                    entry = {"rows": rows, **counts, "build_s": round(build, 1)}
                    entry["plan"] = " / ".join(r[0].strip() for r in plan)
                    entry |= measure(pg.url, rows, args.reads, 0)
                    result["postgres"].append(entry)
                    print(json.dumps(entry), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
