"""Explanations on a real catalogue: are they faithful, specific, and varied?

    python bench/explain.py --model out/bench/models/ml1m-ease --db out/bench/ml1m.duckdb --users 500

Each sampled user's top-k list is built with reasons through the product's pipeline (as
`directrec recommend --explain` builds it). Measured per reason:
- faithful: remove the cited evidence (the first cited item; a group reason: the whole
  group) and re-score independently; the item must lose rank among the items outside the
  user's full history;
- specific: it cites evidence and a category carried by at most half the catalogue;
- the catalogue share of each category a reason cites (lower = more specific), the
  reasons citing a broad one (over half the catalogue), and those naming a title twice;
- per list: the distinct history items cited.
Old code can be measured with the same script: PYTHONPATH=<old src> ... --note "...".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from directrec.data.histories import Histories
from directrec.data.store import describe, open_store, store_name
from directrec.generate.context import ModelContext
from directrec.generate.pipeline import ListOptions, recommend
from directrec.models import load_model

BROAD = 0.5  # share of the catalogue above which a category says nothing


def _median(xs: list[float]) -> float | None:
    return float(np.median(xs)) if xs else None


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    return f"{platform.node()} ({cpu}, {os.cpu_count()} cores, torch threads {threads})"


def _code() -> str:
    import directrec

    src = Path(directrec.__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return f"{src} at {rev}{' + uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return str(src)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--db", required=True, help="DuckDB file or postgresql:// URL")
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tag", default="", help="suffix for the result file")
    p.add_argument("--note", default="", help="which code ran (e.g. the rule before a change)")
    p.add_argument("--out", type=Path, default=Path("docs/results/explain-reasons"))
    args = p.parse_args()
    torch.manual_seed(args.seed)
    model = load_model(args.model)
    ctx = ModelContext.build(model, args.db)
    cats = ctx.info.categories
    counts: dict[str, int] = {}
    for c in (c for cs in cats for c in set(cs)):
        counts[c] = counts.get(c, 0) + 1
    share = {c: n / len(cats) for c, n in counts.items()}
    title = [t or f"item {e}" for e, t in enumerate(ctx.info.titles)]  # as reasons name items
    with open_store(args.db) as store:
        raw_users = store.user_ids()
    users = np.sort(
        np.random.default_rng(args.seed).choice(len(raw_users), args.users, replace=False)
    )
    with open_store(args.db) as store:
        stored = ctx.histories(store, [raw_users[u] for u in users])
    cases = cited = faithful = prob_lowered = specific = groups = broad = repeated = 0
    zero_cited = 0  # evidence cited whose own measured influence is 0 (must stay 0)
    places: list[int] = []
    cited_shares: list[float] = []  # catalogue share of every category a reason cites
    distinct: list[int] = []  # distinct history items cited per top-k list
    named_per_list: list[int] = []  # distinct history items its reasons name, per list
    t_plain = t_explained = 0.0
    examples: list[str] = []
    for row in range(len(users)):
        one = stored.take([row])
        hist = one[0]
        if len(hist) == 0:
            continue
        t = time.perf_counter()
        recommend(model, one, ListOptions(k=args.k), info=ctx.info, stages=ctx.stages)
        t_plain += time.perf_counter() - t
        t = time.perf_counter()
        (rec,) = recommend(
            model, one, ListOptions(k=args.k, explain=True), info=ctx.info, stages=ctx.stages
        )
        t_explained += time.perf_counter() - t
        reasons = rec.reasons or []
        unseen = np.setdiff1d(np.arange(model.n_items), hist)
        distinct.append(len({e for r in reasons for e in r.evidence}))
        named_per_list.append(len({e for r in reasons for e in r.evidence if title[e] in r.text}))
        zero_cited += sum(1 for r in reasons for x in r.influence if x <= 0)
        if len(examples) < 20:
            examples += [f"{ctx.info.titles[r.item]} ← {r.text}" for r in reasons[:2]]
        for r in reasons:
            cases += 1
            named = [ctx.info.titles[e] for e in r.evidence if ctx.info.titles[e]]
            repeated += any(r.text.count(n) > 1 for n in set(named))
            # the categories a reason shows: the old rule listed up to three, this one one
            shown = [c for c in r.shared[:3] if c in r.text]
            cited_shares += [share[c] for c in shown]
            broad += any(share[c] > BROAD for c in shown)
            if not r.evidence:
                continue
            cited += 1
            specific += any(share[c] <= BROAD for c in shown)
            group = getattr(r, "group", "")
            groups += bool(group)
            removed = r.evidence if group else r.evidence[:1]
            at = int(np.searchsorted(unseen, r.item))
            both = Histories.from_lists([hist, hist[~np.isin(hist, removed)]], model.n_items)
            scores = model.score(both)
            ctx.stages.apply_scores(model, both, scores)  # as the list was built
            scores = scores[:, unseen]
            finite = torch.isfinite(scores)  # generators: "not written" is the lowest score
            scores = torch.where(finite, scores, scores[finite].min() - 1.0)
            before, after = scores[0], scores[1]
            r0, r1 = int((before > before[at]).sum()), int((after > after[at]).sum())
            lp = torch.log_softmax(scores, dim=1)[:, at]
            faithful += r1 > r0
            prob_lowered += bool(lp[1] < lp[0])
            places.append(r1 - r0)
    res = {
        "command": " ".join(["python", *sys.argv]),
        "code": args.note or _code(),
        "machine": _machine(),
        "model": f"{model.name} ({args.model})",
        "db": describe(args.db),
        "catalogue_items": len(cats),
        "broad_categories": sorted(c for c, s in share.items() if s > BROAD),
        "seed": args.seed,
        "users": len(users),
        "k": args.k,
        "recommendations": cases,
        "with_evidence": cited,
        "with_evidence_share": cited / max(cases, 1),
        "specific_reason_share": specific / max(cases, 1),
        "group_reasons": groups,
        "faithful_share": faithful / max(cited, 1),
        "probability_lowered_share": prob_lowered / max(cited, 1),
        "median_places_lost": _median(places),
        "cited_category_share_median": _median(cited_shares),
        "reasons_citing_a_broad_category": broad,
        "reasons_naming_a_title_twice": repeated,
        "cited_with_zero_influence": zero_cited,
        "distinct_cited_per_list_median": _median(distinct),
        "distinct_cited_per_list_mean": float(np.mean(distinct)) if distinct else None,
        "distinct_named_per_list_median": _median(named_per_list),
        "distinct_named_per_list_mean": float(np.mean(named_per_list)) if named_per_list else None,
        "explain_seconds_per_user": (t_explained - t_plain) / max(len(users), 1),
        "examples": examples[:20],
        "protocol": (
            "reasons from recommend(..., ListOptions(explain=True)); faithful = removing the "
            "first cited item (a group reason: every item of its group) lowers the item's rank "
            "among items outside the full history, re-scored independently; specific = cites "
            f"evidence and a category carried by at most {BROAD:.0%} of the catalogue; cited = "
            "every evidence item (a group reason: the whole group), named = those whose title "
            "the text shows"
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{store_name(args.db)}-{model.name}{args.tag}.json"
    (args.out / name).write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(res, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
