"""Faithfulness of explanations: remove the cited history item and regenerate; how often
does the recommended item lose rank? Also: how often its probability falls, and the cost.

    python bench/explain.py --model out/bench/models/ml1m-sasrec-ce --db out/bench/ml1m.duckdb --users 500

Ranks are among items outside the user's full history (the list the user saw), from an
independent re-scoring of the reduced history, not from the explainer's own numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from directrec.data.histories import Histories
from directrec.data.store import describe, open_store, store_name
from directrec.generate.context import ModelContext
from directrec.generate.explain import explain
from directrec.generate.pipeline import ListOptions, recommend
from directrec.models import load_model


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--db", required=True, help="DuckDB file or postgresql:// URL")
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--window", type=int, default=30)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tag", default="", help="suffix for the result file")
    p.add_argument("--note", default="", help="which code ran (e.g. PYTHONPATH=<old checkout>)")
    p.add_argument("--out", type=Path, default=Path("docs/results/explain"))
    args = p.parse_args()
    model = load_model(args.model)
    ctx = ModelContext.build(model, args.db)
    with open_store(args.db) as store:
        raw_users = store.user_ids()
    users = np.sort(
        np.random.default_rng(args.seed).choice(len(raw_users), args.users, replace=False)
    )
    with open_store(args.db) as store:
        stored = ctx.histories(store, [raw_users[u] for u in users])
    cases = lowered = prob_lowered = cited = 0
    places: list[int] = []
    distinct: list[int] = []  # distinct history items cited per top-k list
    first: list[int] = []  # distinct first-cited (strongest) items per list
    zero_cited = 0  # evidence cited whose own measured influence is 0 (must stay 0)
    t_explain = 0.0
    for row in range(len(users)):
        one = stored.take([row])
        hist = one[0]
        if len(hist) == 0:
            continue
        recs = recommend(model, one, ListOptions(k=args.k))[0].items
        t = time.perf_counter()
        reasons = explain(
            model, one, recs, ctx.info.titles, ctx.info.categories, window=args.window
        )
        t_explain += time.perf_counter() - t
        unseen = np.setdiff1d(np.arange(model.n_items), hist)
        distinct.append(len({e for r in reasons for e in r.evidence}))
        first.append(len({r.evidence[0] for r in reasons if r.evidence}))
        zero_cited += sum(1 for r in reasons for x in r.influence if x <= 0)
        for r in reasons:
            cases += 1
            if not r.evidence:
                continue
            cited += 1
            at = int(np.searchsorted(unseen, r.item))
            both = Histories.from_lists([hist, hist[hist != r.evidence[0]]], model.n_items)
            scores = model.score(both)[:, unseen]
            before, after = scores[0], scores[1]
            r0, r1 = int((before > before[at]).sum()), int((after > after[at]).sum())
            lp = torch.log_softmax(scores, dim=1)[:, at]
            lowered += r1 > r0
            prob_lowered += bool(lp[1] < lp[0])
            places.append(r1 - r0)
    res = {
        "command": " ".join(["python", *sys.argv]),
        "model": str(args.model),
        "db": describe(args.db),
        "seed": args.seed,
        "users": len(users),
        "k": args.k,
        "window": args.window,
        "recommendations": cases,
        "with_evidence": cited,
        "rank_lowered_share": lowered / max(cited, 1),
        "probability_lowered_share": prob_lowered / max(cited, 1),
        "median_places_lost": float(np.median(places)) if places else None,
        "mean_places_lost": float(np.mean(places)) if places else None,
        "explain_seconds_per_user": t_explain / len(users),
        "distinct_cited_per_list_median": float(np.median(distinct)) if distinct else None,
        "distinct_cited_per_list_mean": float(np.mean(distinct)) if distinct else None,
        "distinct_first_cited_per_list_median": float(np.median(first)) if first else None,
        "cited_with_zero_influence": zero_cited,
        "code": args.note or "this checkout",
        "targets": "faithfulness (rank_lowered_share) ≥ 0.90; distinct cited median ≥ 3",
        "protocol": "cited item = the first evidence item; rank among items outside the full history",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"faithfulness-{store_name(args.db)}{args.tag}.json").write_text(
        json.dumps(res, indent=1)
    )
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
