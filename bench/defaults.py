"""The generators with default settings on MovieLens-100K, as a new user runs them: the
whole `directrec train` command's wall time (target ≤ 5 minutes on 2 cores), epochs, what
stopped training, per-epoch cost and the share of time spent validating.

    python bench/defaults.py --db out/bench/ml100k.duckdb
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", required=True)
    p.add_argument("--models", default="sasrec-ce,semantic-id")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "defaults")
    args = p.parse_args()
    res = {
        "bench": " ".join(["python", *sys.argv]),
        "db": args.db,
        "cpus": len(os.sched_getaffinity(0)),
        "target_seconds": 300,
        "runs": {},
    }
    for name in args.models.split(","):
        dest = ROOT / "out" / "defaults" / name
        cmd = [str(BIN / "directrec"), "train", name, "--db", args.db, "--out", str(dest)]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        cfg = json.loads((dest / "config.json").read_text())
        log = cfg["meta"].get("train_log", [])
        train_s = sum(r["seconds"] for r in log)
        valid_s = sum(r.get("valid_seconds", 0.0) for r in log)
        res["runs"][name] = {
            "command": " ".join(["directrec", *cmd[1:]]),
            "wall_seconds": round(wall, 1),
            "within_target": wall <= 300,
            "epochs": len(log),
            "stopped_by": cfg["meta"].get("stopped_by"),
            "best_epoch": cfg["meta"].get("best_epoch"),
            "best_valid_ndcg@10": cfg["meta"].get("best_valid_ndcg@10"),
            "seconds_per_epoch": round(train_s / max(len(log), 1), 2),
            "training_seconds": round(train_s, 1),
            "validation_seconds": round(valid_s, 1),
            "validation_share_of_wall": round(valid_s / wall, 3),
            "other_seconds": round(wall - train_s - valid_s, 1),  # start-up, text, RQ-VAE, save
            "settings": {k: cfg["config"].get(k) for k in ("max_minutes", "epochs", "eval_every")},
        }
        print(json.dumps(res["runs"][name]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ml100k.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
