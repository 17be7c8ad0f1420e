"""Beam width, ID-head proposals and ID-head weight of a saved semantic-ID hybrid, chosen on
validation after training. The model must come from `directrec benchmark --save-models`
with early stopping, so it was fit on the training part only and the validation targets
are unseen by it.

Each (beam, id_candidates, weight) triple is scored on a sample of validation users drawn
with another seed than the one the fit's own validation used; the best NDCG@10 (ties: the
smaller beam, then fewer proposals, then the smaller weight) is then evaluated once on the
full test stage, through the model's ordinary scoring path. Written as JSON with the exact
command.

The beam search does not depend on the weight, so during the sweep it runs once per
(beam, id_candidates) and each weight re-blends its cached candidates: the same scores as
a fresh search, at a fraction of the cost. `beam_share@10` is the share of the top-10
items that the trie beam wrote (the rest are the ID head's proposals), measured on the
validation sample before the masking of history older than the context cap. For
reference (never chosen), the ID head's own ranking is scored on the same users. With
`--save DIR` the model is saved again with the chosen settings, so `directrec evaluate
--model DIR` scores it as chosen.

    python bench/beam_blend.py --model out/bench/models/sports-idhead-cos/semantic-id \
        --db out/bench/sports.duckdb --out docs/results/sports-sem-idhead-cos/beam-blend.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from directrec.data.dataset import Dataset
from directrec.data.split import make_split
from directrec.evaluate.protocol import evaluate, validator
from directrec.evaluate.saved import stamp
from directrec.models import load_model
from directrec.models.semantic import blended


def beam_share(cache: dict, width: int, weight: float, k: int = 10) -> float:
    """Share of the cached lists' top-`k` items (under `weight`) written by the beam: the
    first `width` candidate columns; the rest are the ID head's proposals."""
    from_beam = total = 0
    for _items, score, id_at in cache.values():
        s = blended(score, id_at, weight)
        top = torch.topk(s, min(k, s.shape[1]), dim=1)
        ok = torch.isfinite(top.values)
        from_beam += int(((top.indices < width) & ok).sum())
        total += int(ok.sum())
    return from_beam / max(total, 1)


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
        "--candidates",
        type=lambda t: [int(x) for x in t.split(",")],
        default=[0],
        help="id_candidates values: the ID head's proposals that join the beam",
    )
    p.add_argument(
        "--weights", type=lambda t: [float(x) for x in t.split(",")], default=[2.0, 4.0, 8.0, 16.0]
    )
    p.add_argument("--valid-users", type=int, default=6000)
    p.add_argument("--sample-seed", type=int, default=1, help="the fit's validation used 0")
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        help="also save the model with the chosen settings here (for `directrec evaluate`)",
    )
    args = p.parse_args()

    model = load_model(args.model)
    if "id_blend" not in model.meta:
        raise SystemExit(f"{args.model}: not a semantic-ID model with an ID head (no id_blend)")
    ds = Dataset.from_store(args.db)
    split = make_split(ds.interactions, args.split)
    _, v_seen, v_targets = split.stage("valid", args.max_history)
    check = validator(
        split.inputs("valid", args.max_history),
        v_targets,
        seen=v_seen,
        max_users=args.valid_users,
        seed=args.sample_seed,
    )
    c = model.config
    saved = {"beam": c.beam, "id_candidates": c.id_candidates, "id_blend": model.meta["id_blend"]}
    grid = []
    for beam in args.beams:
        for n in args.candidates:
            c.beam, c.id_candidates = beam, n
            with model.reusing_candidates() as cache:
                for w in args.weights:
                    model.meta["id_blend"] = w
                    t = time.perf_counter()
                    grid.append(
                        {
                            "beam": beam,
                            "id_candidates": n,
                            "id_blend": w,
                            "valid_ndcg@10": round(check(model), 5),
                            "seconds": round(time.perf_counter() - t, 1),
                            "beam_share@10": round(beam_share(cache, beam, w), 4),
                        }
                    )
                    print(json.dumps(grid[-1]), flush=True)
    # reference, not a candidate for the choice: the ID head's own top-10 (its best 100
    # unseen items join a 10-wide beam, and a weight of 1e6 leaves the code term as a tie-break)
    c.beam, c.id_candidates, model.meta["id_blend"] = 10, 100, 1e6
    id_alone = round(check(model), 5)
    print(json.dumps({"id_head_alone_valid_ndcg@10": id_alone}), flush=True)
    best = max(
        grid,
        key=lambda r: (r["valid_ndcg@10"], -r["beam"], -r["id_candidates"], -r["id_blend"]),
    )
    c.beam, c.id_candidates = best["beam"], best["id_candidates"]
    model.meta["id_blend"] = best["id_blend"]
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
        "evaluated once, at the chosen setting, without the sweep's candidate cache",
        "saved_settings": saved,
        "grid": grid,
        "id_head_alone_valid_ndcg@10": id_alone,
        "chosen": {k: best[k] for k in ("beam", "id_candidates", "id_blend")},
        "test": {k: round(v, 4) for k, v in res.metrics.items()},
        "test_users": res.n_users,
        "test_seconds": round(time.perf_counter() - t, 1),
    }
    if args.save is not None:
        if "item_ids" not in model.meta:  # kept by a benchmark before session 13
            stamp(model, ds, args.db)
        model.meta["tuned_by"] = doc["command"]
        doc["saved_to"] = str(model.save(args.save))
    print(json.dumps(doc, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
