"""Grid search of one model's settings on the leave-one-out *validation* stage (fit on train,
rank the second-to-last item). The test split is never touched, so defaults chosen here can
be reported on test honestly.

    python bench/tune.py --db out/bench/ml1m.duckdb --model bpr \
        --grid learning_rate=0.01,0.05 --grid regularization=0.01,0.001 --out out/tune/bpr.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

from directrec.cli import parse_settings
from directrec.data.dataset import Dataset
from directrec.data.split import leave_one_out
from directrec.evaluate.protocol import evaluate
from directrec.models import create
from directrec.text.encoder import item_embeddings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--grid", action="append", default=[], help="key=v1,v2,…")
    ap.add_argument("--max-history", type=int, default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    ds = Dataset.from_store(args.db)
    model_cls = create(args.model)
    if model_cls.capabilities.needs_text:
        ds.catalog.embeddings = item_embeddings(ds, args.db)
    split = leave_one_out(ds.interactions)
    fit, seen, targets = split.stage("valid", args.max_history)
    inputs = split.inputs("valid", args.max_history)
    axes = [(g.split("=")[0], g.split("=")[1].split(",")) for g in args.grid]
    rows = []
    for values in itertools.product(*[v for _, v in axes]):
        pairs = [f"{args.model}.{k}={v}" for (k, _), v in zip(axes, values, strict=False)]
        settings = {"seed": args.seed, **parse_settings(pairs, [args.model])[args.model]}
        t0 = time.perf_counter()
        model = create(args.model, settings).fit(fit, ds.catalog)
        fit_s = time.perf_counter() - t0
        m = evaluate(model, inputs, targets, (10,), seen=seen).metrics
        rows.append(
            {
                "settings": settings,
                "hr@10": m["hr@10"],
                "ndcg@10": m["ndcg@10"],
                "fit_seconds": round(fit_s, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: r["ndcg@10"])
    doc = {
        "command": " ".join([sys.executable, *sys.argv]),
        "db": args.db,
        "fingerprint": ds.fingerprint,
        "split": "loo, validation stage (fit on train, target = second-to-last item)",
        "seed": args.seed,
        "max_history": args.max_history,
        "model": args.model,
        "results": rows,
        "best_by_ndcg@10": best,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print("best:", json.dumps(best))


if __name__ == "__main__":
    main()
