"""`directrec stream` benchmarks on loopback, each writing JSON to --out:

    python bench/stream.py throughput --events 20000 --batches 50,500
    python bench/stream.py latency --rounds 200

`throughput`: MovieLens-100K ingested into a DuckDB file and into a PostgreSQL database
(its own server, fsync on), then N interaction events already waiting in a Redis Stream
are drained by one consumer (the product's Consumer, in this process); events/s is N over
the time from the first read to the last acknowledgement: the rate the consumer sustains
while a backlog lasts, which bounds the rate it can keep up with. Each setting runs
`--repeats` times on a fresh store; the median is the figure quoted.

`latency`: a PostgreSQL store, a `directrec serve` process over it (EASE fitted on the
store), and a `directrec stream` process consuming. Each round picks a user, XADDs the
first item of that user's current list, and polls the list until the item has left it
(it is now history, and lists exclude what was seen): the time from XADD to the first
list without it. A DuckDB store cannot take part: DuckDB lets no other process open a
file one process writes (docs/serving.md).

Nothing here tunes anything; the figures depend on the machine (`cpus` in the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def ml100k(db: str | Path) -> dict:
    from directrec.data import loaders
    from directrec.data.store import ingest

    inter, items = loaders.bundled_ml100k()
    return ingest(db, loaders.load("recbole", inter, items))


def produce(r, stream: str, n: int, users: list[str], items: list[str], seed: int) -> float:
    """XADD n events (random stored users and items, times after the data's); seconds."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(n, start + 1000)):
            fields = {"user_id": rng.choice(users), "item_id": rng.choice(items)}
            pipe.xadd(stream, {**fields, "timestamp": str(1_800_000_000 + i), "event": "view"})
        pipe.execute()
    return time.perf_counter() - t0


def drain(url: str, stream: str, db: str | Path, n: int, batch: int) -> dict:
    from directrec.data.stream import Consumer, StreamConfig

    c = Consumer(StreamConfig(url, stream, batch=batch, block_ms=200), db)
    t0 = time.perf_counter()
    totals = c.run(max_events=n)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    c.close()  # brings the store's fingerprint up to date (once, not per batch)
    return {
        "batch": batch,
        "events": n,
        "stored": totals.stored,
        "batches": totals.batches,
        "seconds": round(seconds, 3),
        "events_per_s": round(n / seconds, 1),
        "fingerprint_refresh_s": round(time.perf_counter() - t1, 3),
    }


def throughput(args: argparse.Namespace) -> dict:
    import redis

    from directrec.data.pglocal import LocalPostgres
    from directrec.data.redislocal import LocalRedis
    from directrec.data.store import open_store

    results: dict = {"events": args.events, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp, LocalRedis() as rs:
        r = redis.Redis(port=rs.port)
        with LocalPostgres() as pg:
            for backend, batch, rep in itertools.product(
                ("duckdb", "postgres"), args.batches, range(args.repeats)
            ):
                db = Path(tmp) / f"s-{batch}-{rep}.duckdb" if backend == "duckdb" else pg.url
                counts = ml100k(db)
                with open_store(db) as s:
                    users, items = s.user_ids(), s.items()["item_id"].tolist()
                stream = f"ev-{backend}-{batch}-{rep}"
                produce_s = produce(r, stream, args.events, users, items, args.seed + rep)
                run = drain(rs.url, stream, db, args.events, batch)
                with open_store(db) as s:
                    assert s.counts()["interactions"] == counts["interactions"] + args.events
                run |= {
                    "backend": backend,
                    "repeat": rep,
                    "store_rows_before": counts["interactions"],
                }
                run["xadd_per_s"] = round(args.events / produce_s, 1)
                results["runs"].append(run)
                print(json.dumps(run), flush=True)
        r.close()
    # The machine is shared: the median of the repeats is the figure quoted.
    results["median_events_per_s"] = {
        f"{backend}/batch={batch}": float(
            np.median(
                [
                    x["events_per_s"]
                    for x in results["runs"]
                    if x["backend"] == backend and x["batch"] == batch
                ]
            )
        )
        for backend in ("duckdb", "postgres")
        for batch in args.batches
    }
    return results


def latency(args: argparse.Namespace) -> dict:
    import httpx
    import redis

    from directrec.data.dataset import Dataset
    from directrec.data.pglocal import LocalPostgres, free_port
    from directrec.data.redislocal import LocalRedis
    from directrec.data.store import open_store
    from directrec.models import create
    from directrec.serve import registry

    out: dict = {"rounds": args.rounds}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-stream-"))
        rs = stack.enter_context(LocalRedis())
        pg = stack.enter_context(LocalPostgres())
        ml100k(pg.url)
        ds = Dataset.from_store(pg.url)
        model = create("ease").fit(ds.interactions)
        with open_store(pg.url) as s:
            model.meta.update(
                user_ids=ds.users.ids.tolist(),
                item_ids=ds.items.ids.tolist(),
                store_seq=s.last_seq(),
            )
        reg = Path(tmp) / "registry"
        registry.publish(model.save(Path(tmp) / "model"), reg)
        port = free_port()
        cli = [sys.executable, "-m", "directrec.cli"]
        logs = stack.enter_context(open(Path(tmp) / "procs.log", "w"))
        serve_args = ["--port", str(port), "--threads", "1", "--watch-seconds", "0"]
        stream_args = ["--source", rs.url, "--stream", "live", "--batch", "100"]
        procs = [
            subprocess.Popen(
                [*cli, command, "--db", pg.url, *more], stdout=logs, stderr=subprocess.STDOUT
            )
            for command, more in (
                ("serve", ["--model", str(reg), *serve_args]),
                ("stream", stream_args),
            )
        ]
        stack.callback(lambda: [(p.terminate(), p.wait(60)) for p in procs])
        r = stack.enter_context(redis.Redis(port=rs.port))
        client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30))
        deadline = time.time() + 300
        while True:
            assert all(p.poll() is None for p in procs), "a process died"
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "service not ready"
            time.sleep(0.2)
        import psycopg

        db = stack.enter_context(psycopg.connect(pg.url, autocommit=True))
        rng = random.Random(args.seed)
        users = ds.users.ids.tolist()
        waits, commits, polls = [], [], []
        for n in range(args.rounds):
            user = rng.choice(users)
            path = f"/v1/users/{user}/recommendations"
            first = client.get(path).json()["items"][0]["item_id"]
            fields = {"user_id": user, "item_id": first, "key": f"round-{n}"}
            t0 = time.perf_counter()
            r.xadd("live", {**fields, "timestamp": str(1_800_000_000 + n)})
            k, committed = 0, None
            while True:
                k += 1
                if (
                    committed is None
                    and db.execute(
                        "SELECT 1 FROM stream_keys WHERE key = %s", (fields["key"],)
                    ).fetchone()
                ):
                    committed = time.perf_counter() - t0  # (an upper bound: polled)
                got = [x["item_id"] for x in client.get(path).json()["items"]]
                if first not in got:
                    break
                assert time.perf_counter() - t0 < 30, "the event never showed"
            waits.append(time.perf_counter() - t0)
            commits.append(committed if committed is not None else waits[-1])
            polls.append(k)
            time.sleep(args.gap)
    ms = np.array(waits) * 1000

    def pcts(x: np.ndarray) -> dict:
        return {f"p{q}": round(float(np.percentile(x, q)), 2) for q in (50, 90, 99)} | {
            "max": round(float(x.max()), 2)
        }

    out |= {
        "store": "postgres (MovieLens-100K, own server, fsync on)",
        "model": "ease",
        "consumer_batch": 100,
        "latency_ms": pcts(ms),
        # when the bench's own poll first found the event's key committed in the store
        # (polled between list requests, so an upper bound on XADD → commit)
        "xadd_to_commit_ms": pcts(np.array(commits) * 1000),
        "polls_per_round_mean": round(float(np.mean(polls)), 2),
        "duckdb": "not applicable: a service cannot open a DuckDB file another process writes",
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/stream")
    ap.add_argument("--seed", type=int, default=42)
    sub = ap.add_subparsers(dest="scenario", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--events", type=int, default=20_000)
    t.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[50, 500])
    t.add_argument("--repeats", type=int, default=3)
    lat = sub.add_parser("latency")
    lat.add_argument("--rounds", type=int, default=200)
    lat.add_argument("--gap", type=float, default=0.02, help="seconds between rounds")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (make setup installs it)")
    t0 = time.time()
    result = throughput(args) if args.scenario == "throughput" else latency(args)
    doc = {
        "scenario": args.scenario,
        "command": "python bench/stream.py " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "cpus": os.cpu_count(),
        **result,
        "bench_seconds": round(time.time() - t0, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.scenario}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
