"""Peak memory and wall time of scoring users with a saved model, in the evaluation's
batches of 1,024 histories (what `directrec benchmark` reports as eval s and peak MB, here
without the fit). Written as JSON with the exact command.

    python bench/score_cost.py --model out/bench/models/beauty-idhead-b50/semantic-id \
        --db out/bench/beauty.duckdb --users 4096
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from directrec.data.dataset import Dataset
from directrec.data.histories import Histories
from directrec.models import load_model


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--users", type=int, default=4096, help="the first N users of the store")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: print only)")
    args = p.parse_args()
    model = load_model(args.model)
    inter = Dataset.from_store(args.db).interactions
    n = min(args.users, inter.n_users)
    loaded = peak_mb()
    t = time.perf_counter()
    for b in range(0, n, 1024):
        model.score(Histories.from_interactions(inter, np.arange(b, min(b + 1024, n))), k=args.k)
    doc = {
        "command": " ".join(["python", *sys.argv]),
        "model": str(args.model),
        "db": str(args.db),
        "users": n,
        "k": args.k,
        "batch": 1024,
        "peak_mb_after_load": loaded,
        "peak_mb": peak_mb(),
        "score_seconds": round(time.perf_counter() - t, 1),
    }
    print(json.dumps(doc, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
