"""Does glibc's allocator slow a CPU training step? Times whole SASRec training steps
(the ML-1M recipe: packed random batches of 128 windows of 200, DropKey 0.2, full softmax,
Adam) at 4 and 5 blocks in two fresh processes: glibc's defaults, and with freed memory
kept in the heap (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_), so
that activations stop being mapped, page-faulted and unmapped every step. Written as JSON
with the exact command.

    python bench/malloc_step.py --db out/bench/ml1m.duckdb
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

KEEP = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),  # glibc's largest: blocks below it use the heap
    "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30),
    "MALLOC_TOP_PAD_": str(256 * 2**20),
}


def measure(db: Path, blocks: list[int], steps: int, seed: int) -> list[dict]:
    """Runs in the child: per round, mean seconds, system seconds and minor page faults per step."""
    import torch

    from directrec.data.dataset import Dataset
    from directrec.data.histories import Histories
    from directrec.data.split import leave_one_out
    from directrec.models.sasrec import SASRecNet, SASRecNetConfig, batches
    from epoch_cost import packed_step  # this script's folder is on sys.path

    ds = Dataset.from_store(db)
    fit = leave_one_out(ds.interactions).stage("valid")[0]
    windows = torch.from_numpy(Histories.from_interactions(fit).windows(201))
    real = windows[(windows > 0).sum(1) >= 2]
    torch.manual_seed(seed)
    cut = batches(real, 128, False)
    rounds = []
    for n in blocks:
        torch.manual_seed(seed)
        net = SASRecNet(
            ds.interactions.n_items,
            SASRecNetConfig(max_len=200, layers=n, attn_dropout=0.2, drop_keys=True),
        ).train()
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        packed_step(net, opt, real[cut[0]])  # warm-up
        r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for rows in cut[1 : 1 + steps]:
            packed_step(net, opt, real[rows])
        r1, dt = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t
        rounds.append(
            {
                "blocks": n,
                "seconds_per_step": round(dt / steps, 4),
                "system_seconds_per_step": round((r1.ru_stime - r0.ru_stime) / steps, 4),
                "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) // steps,
            }
        )
    return rounds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--blocks", default="4,5,4,5", help="one round per entry, in this order")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=Path("docs/results/epoch-cost/malloc"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    blocks = [int(b) for b in args.blocks.split(",")]
    if args.child:
        print(json.dumps(measure(args.db, blocks, args.steps, args.seed)))
        return
    runs = {}
    for name, extra in (("glibc_defaults", {}), ("heap_kept", KEEP)):
        env = {k: v for k, v in os.environ.items() if k not in KEEP} | extra
        child = [sys.executable, __file__, "--child", "--db", str(args.db), "--blocks",
                 args.blocks, "--steps", str(args.steps), "--seed", str(args.seed)]  # fmt: skip
        done = subprocess.run(child, env=env, check=True, capture_output=True, text=True)
        runs[name] = {"env": extra, "rounds": json.loads(done.stdout.strip().splitlines()[-1])}
    out = {
        "command": " ".join(["python", *sys.argv]),
        "db": str(args.db),
        "threads": os.environ.get("OMP_NUM_THREADS", "torch default"),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.db.stem}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
