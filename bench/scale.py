"""Scale-out measurements (JSON in docs/results/scale/; each records its exact commands).

    python bench/scale.py ingest   --rows 10000000 --users 1000000 --items 100000 [--store postgres]
    python bench/scale.py train    --db out/bench/ml1m.duckdb --epochs 3
    python bench/scale.py generate --db out/bench/ml1m.duckdb --model DIR [--model DIR …]

- ingest: synthetic interactions (Zipf items, seeded) written to Parquet, then
  `directrec ingest --format parquet` into DuckDB in a child process: wall time and the
  child's peak RSS. `--store postgres` ingests into a local PostgreSQL server started for
  the run (fsync on), and adds the server's peak memory (PSS summed over its processes,
  sampled every second).
- train: `directrec train sasrec-ce` with 1 process and with 2 under torchrun (gloo, one
  thread each): training windows per second from the per-epoch log (validation excluded).
- generate: `directrec generate` for every user with 1 and 2 processes: users per second
  of the whole command (start-up, model load and the merge included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUT = ROOT / "docs" / "results" / "scale"


def child(cmd: list[str], env: dict | None = None) -> dict:
    """Run `cmd`; its wall time and the peak RSS of its largest process."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # max over children
    return {
        "command": " ".join(cmd),
        "wall_seconds": round(wall, 2),
        "children_peak_rss_mb": round(peak),
    }


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
    }


def ingest(args: argparse.Namespace) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(args.seed)
    work = ROOT / "out" / "scale"
    work.mkdir(parents=True, exist_ok=True)
    src, db = work / f"synthetic-{args.rows}.parquet", work / f"synthetic-{args.rows}.duckdb"
    t0 = time.perf_counter()
    pop = 1.0 / np.arange(1, args.items + 1) ** 0.9
    cdf = np.cumsum(pop / pop.sum())
    users = rng.integers(0, args.users, args.rows)
    items = np.searchsorted(cdf, rng.random(args.rows))
    ts = 1_500_000_000 + rng.integers(0, 10**8, args.rows)
    table = pa.table(
        {
            "user": pa.array(users.astype(str)),
            "item": pa.array(items.astype(str)),
            "ts": pa.array(ts),
        }
    )
    pq.write_table(table, src)
    made = time.perf_counter() - t0
    if args.store == "postgres":
        from directrec.data.pglocal import LocalPostgres

        shutil.rmtree(work / "pg", ignore_errors=True)
        with LocalPostgres(work / "pg", fsync=True) as pg:
            sampler = ServerMemory(pg.data)
            sampler.start()
            run = child(ingest_cmd(src, pg.url))
            sampler.stop()
            run["server_peak_pss_mb"] = sampler.peak_mb
            run["command"] = run["command"].replace(
                pg.url, "postgresql://directrec@127.0.0.1:PORT/directrec"
            )
        key, target = "postgres_ingest", "none set (DuckDB: ≤ 60 s and ≤ 4 GiB)"
    else:
        db.unlink(missing_ok=True)
        run = child(ingest_cmd(src, str(db)))
        key, target = "duckdb_ingest", "DuckDB ≤ 60 s and ≤ 4 GiB for 10^7 rows"
    return {
        "rows": args.rows,
        "users": args.users,
        "items": args.items,
        "seed": args.seed,
        "synthesis_seconds": round(made, 1),
        "parquet_mb": round(src.stat().st_size / 2**20),
        key: run,
        "target": target,
    }


def ingest_cmd(src: Path, db: str) -> list[str]:
    cols = ["--columns", "user=user,item=item,time=ts"]
    return [
        str(BIN / "directrec"),
        "ingest",
        "--format",
        "parquet",
        "--interactions",
        str(src),
        *cols,
        "--db",
        db,
    ]


class ServerMemory(threading.Thread):
    """Peak PSS of a PostgreSQL server (postmaster and its children), sampled each second."""

    def __init__(self, data: Path) -> None:
        super().__init__(daemon=True)
        self.pid = int((data / "postmaster.pid").read_text().split()[0])
        self.peak_mb = 0.0
        self.halt = threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.halt.wait(1.0):
            total = 0
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_full_info().pss
            self.peak_mb = max(self.peak_mb, round(total / 2**20, 1))

    def stop(self) -> None:
        self.halt.set()
        self.join()


def train(args: argparse.Namespace) -> dict:
    out = {}
    for nproc in (1, 2):
        model = ROOT / "out" / "scale" / f"train-{nproc}"
        base = [
            "-m",
            "directrec",
            "train",
            "sasrec-ce",
            "--db",
            args.db,
            "--out",
            str(model),
            "--set",
            f"epochs={args.epochs}",
            "--set",
            "eval_every=1000",
            "--set",
            "max_len=200",
            "--set",
            "batch_size=128",
            "--set",
            f"threads={2 // nproc}",
        ]
        cmd = (
            [sys.executable, *base]
            if nproc == 1
            else [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *base]
        )
        run = child(cmd, {"OMP_NUM_THREADS": str(2 // nproc)})
        cfg = json.loads((model / "config.json").read_text())
        log = cfg["meta"]["train_log"]
        windows = cfg["n_users"]  # one training window per user with ≥ 2 items (upper bound)
        secs = [r["seconds"] for r in log]
        out[f"{nproc}_process"] = {
            **run,
            "epoch_seconds": secs,
            "windows_per_second": round(windows / np.median(secs), 1),
        }
    return {
        "db": args.db,
        "model": "sasrec-ce (max_len 200, dim 64, 2 layers, batch 128)",
        "epochs": args.epochs,
        **out,
    }


def generate(args: argparse.Namespace) -> dict:
    runs = {}
    for model in args.model:
        name = json.loads((Path(model) / "config.json").read_text())["model"]
        for nproc in (1, 2):
            dest = ROOT / "out" / "scale" / f"recs-{name}-{nproc}.parquet"
            base = [
                "-m",
                "directrec",
                "generate",
                "--model",
                model,
                "--db",
                args.db,
                "--k",
                "10",
                "--out",
                str(dest),
            ]
            cmd = (
                [sys.executable, *base]
                if nproc == 1
                else [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *base]
            )
            run = child(cmd, {"OMP_NUM_THREADS": str(2 // nproc)})
            import pyarrow.parquet as pq

            users = pq.read_table(dest, columns=["user_id"]).column(0).unique().__len__()
            runs[f"{name}-{nproc}_process"] = {
                **run,
                "users": users,
                "users_per_second": round(users / run["wall_seconds"], 1),
            }
    return {"db": args.db, "k": 10, **runs}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("what", choices=["ingest", "train", "generate"])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--db", default="out/bench/ml1m.duckdb")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--model", action="append", default=[])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--store", choices=["duckdb", "postgres"], default="duckdb")
    p.add_argument("--tag", default="", help="suffix for the result file")
    args = p.parse_args()
    doc = {"bench": " ".join(["python", *sys.argv]), "machine": machine()}
    doc |= {"ingest": ingest, "train": train, "generate": generate}[args.what](args)
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.rows}" if args.what == "ingest" else ""
    suffix += "-postgres" if args.what == "ingest" and args.store == "postgres" else ""
    suffix += f"-{args.tag}" if args.tag else ""
    (OUT / f"{args.what}{suffix}.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
