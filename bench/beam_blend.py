"""Beam width and ID-head weight of a saved semantic-ID hybrid, chosen on validation after
training. The model must come from `directrec benchmark --save-models` with early stopping,
so it was fit on the training part only and the validation targets are unseen by it.

Each (beam, weight) pair is scored on a sample of validation users drawn with another seed
than the one the fit's own validation used; the best NDCG@10 (ties: the smaller beam, then
the smaller weight) is then evaluated once on the full test stage. Written as JSON with the
exact command.

    python bench/beam_blend.py --model out/bench/models/sports-idhead-cos/semantic-id \
        --db out/bench/sports.duckdb --out docs/results/sports-sem-idhead-cos/beam-blend.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from directrec.data.dataset import Dataset
from directrec.data.split import make_split
from directrec.evaluate.protocol import evaluate, validator
from directrec.models import load_model


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--split", default="loo")
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--beams", type=lambda t: [int(x) for x in t.split(",")], default=[50, 100])
    p.add_argument(
        "--weights", type=lambda t: [float(x) for x in t.split(",")], default=[2.0, 4.0, 8.0, 16.0]
    )
    p.add_argument("--valid-users", type=int, default=6000)
    p.add_argument("--sample-seed", type=int, default=1, help="the fit's validation used 0")
    args = p.parse_args()

    model = load_model(args.model)
    if "id_blend" not in model.meta:
        raise SystemExit(f"{args.model}: not a semantic-ID model with an ID head (no id_blend)")
    split = make_split(Dataset.from_store(args.db).interactions, args.split)
    _, v_seen, v_targets = split.stage("valid", args.max_history)
    check = validator(
        split.inputs("valid", args.max_history),
        v_targets,
        seen=v_seen,
        max_users=args.valid_users,
        seed=args.sample_seed,
    )
    saved = {"beam": model.config.beam, "id_blend": model.meta["id_blend"]}
    grid = []
    for beam in args.beams:
        for w in args.weights:
            model.config.beam, model.meta["id_blend"] = beam, w
            t = time.perf_counter()
            grid.append({"beam": beam, "id_blend": w, "valid_ndcg@10": round(check(model), 5)})
            grid[-1]["seconds"] = round(time.perf_counter() - t, 1)
            print(json.dumps(grid[-1]), flush=True)
    best = max(grid, key=lambda r: (r["valid_ndcg@10"], -r["beam"], -r["id_blend"]))
    model.config.beam, model.meta["id_blend"] = best["beam"], best["id_blend"]
    _, seen, targets = split.stage("test", args.max_history)
    t = time.perf_counter()
    res = evaluate(model, split.inputs("test", args.max_history), targets, (10, 20), seen=seen)
    doc = {
        "command": " ".join(["python", *sys.argv]),
        "model": str(args.model),
        "db": str(args.db),
        "split": args.split,
        "max_history": args.max_history,
        "protocol": "full ranking over all items, seen items excluded; the choice is made on "
        f"{args.valid_users} validation users (sample seed {args.sample_seed}), test is "
        "evaluated once, at the chosen pair",
        "saved_settings": saved,
        "grid": grid,
        "chosen": {"beam": best["beam"], "id_blend": best["id_blend"]},
        "test": {k: round(v, 4) for k, v in res.metrics.items()},
        "test_users": res.n_users,
        "test_seconds": round(time.perf_counter() - t, 1),
    }
    print(json.dumps(doc, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
