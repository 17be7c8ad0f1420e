"""Write docs/benchmarks.md from the committed results (docs/results/*/results.json).

    python bench/make_docs.py

Every figure in the page comes from a results.json written by `directrec benchmark`; the
page repeats the command that produced it.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"

INTRO = """# Benchmarks

Produced by `bench/prepare.sh` (ingest), `bench/tune_all.sh` (settings chosen on the
leave-one-out **validation** stage only; grids and scores in `docs/results/tuning/`),
`bench/zoo.sh` (the runs below) and `python bench/make_docs.py` (this page). Data:
`../shared/data/` (see each SOURCE.md). Machine: 2 CPU cores (AMD EPYC), 24 GiB, no GPU;
each model ran in its own process, one after another, so fit time, evaluation time and peak
memory (VmHWM of that process, including Python, torch and the data) are its own.

Protocol: leave-one-out (last item test, second-to-last validation), full ranking over all
items, the user's train + validation items excluded, a target tied with other items counts
as ranked above them. Classic models fit on train + validation. Models marked *early
stopping* train on train, choose their epoch on validation NDCG@10, and then rank the test
item with train + validation as history (the SASRec/TIGER protocol). Evaluation time is for
all evaluated users.

Reference values from `../shared/data/README.md` (computed independently of this project,
same protocol): ML-1M popularity 0.0392 / 0.0193 and EASE (λ = 500) 0.1108 / 0.0551 HR@10 /
NDCG@10; Beauty popularity 0.0141 / 0.0063, EASE (λ = 200) 0.0764 / 0.0418. Our evaluator
reproduces them: ML-1M popularity exactly (table below), ML-1M EASE λ = 500 exactly
(`directrec benchmark --db out/bench/ml1m.duckdb --models ease --set ease.l2=500 --out
out/check/ml1m-ease500` → 0.1108 / 0.0551), Beauty popularity exactly without the history cap
(`directrec benchmark --db out/bench/beauty.duckdb --models pop --out out/check/beauty-pop-nocap`
→ 0.0141 / 0.0063). With the TIGER history cap of 20 (the tables below), popularity counts
only the capped histories, hence 0.0148 / 0.0065 there.
"""


def table(doc: dict) -> str:
    spec = doc["spec"]
    rows = [
        "| model | HR@10 | NDCG@10 | HR@20 | NDCG@20 | MRR@10 | coverage@10 | novelty@10 "
        "| diversity@10 | fit s | eval s | peak MB | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["results"]:
        if "error" in r:
            rows.append(f"| {r['model']} | skipped: {r['error']} |")
            continue
        m = r["metrics"]
        note = ""
        if r.get("best_epoch"):
            note = (f"early stopping: best epoch {r['best_epoch']} of "
                    f"{len(r.get('train_log', []))}")  # fmt: skip
        cells = [m.get(k) for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10",
                                    "coverage@10", "novelty@10", "diversity@10")]  # fmt: skip
        rows.append(
            f"| {r['model']} | " + " | ".join("—" if v is None else f"{v:.4f}" for v in cells)
            + f" | {r['fit_seconds']:.1f} | {r['eval_seconds']:.1f} | {r['peak_rss_mb']:.0f}"
            + f" | {note} |"
        )  # fmt: skip
    seg = ["", "Per segment (users by history length), NDCG@10:", "",
           "| model | " + " | ".join(f"{s} ({n} users)" for s, n in _segment_sizes(doc)) + " |",
           "|---|" + "---:|" * len(_segment_sizes(doc))]  # fmt: skip
    for r in doc["results"]:
        if "error" not in r:
            vals = [r["segments"][s].get("ndcg@10") for s, _ in _segment_sizes(doc)]
            seg.append(f"| {r['model']} | "
                       + " | ".join("—" if v is None else f"{v:.4f}" for v in vals) + " |")  # fmt: skip
    ds = doc["dataset"]
    head = (
        f"{ds['users']:,} users, {ds['items']:,} items, {ds['interactions']:,} interactions "
        f"(fingerprint `{ds['fingerprint']}`); {doc['split']['evaluated_users']:,} users "
        f"evaluated; seed {spec['seed']}"
        + (f"; history capped at the last {spec['max_history']} items" if spec.get("max_history") else "")
        + "."
    )  # fmt: skip
    return "\n".join([head, "", *rows, *seg])


def _segment_sizes(doc: dict) -> list[tuple[str, int]]:
    first = next(r for r in doc["results"] if "error" not in r)
    return [(s, v["users"]) for s, v in first["segments"].items()]


def main() -> None:
    parts = [INTRO]
    for name, title in (("ml1m", "MovieLens-1M"), ("beauty", "Amazon Beauty (history ≤ 20)")):
        # The zoo and the generative runs of one dataset form one table (same data, split).
        runs = [RESULTS / d / "results.json" for d in (name, f"{name}-gen", f"{name}-sem")]
        docs = [json.loads(f.read_text()) for f in runs if f.exists()]
        if not docs:
            parts.append(f"## {title}\n\nNot run yet: `bash bench/zoo.sh {name}`.\n")
            continue
        if len({d["dataset"]["fingerprint"] for d in docs}) != 1:
            raise SystemExit(f"{name}: results come from different data; rerun bench/zoo.sh")
        merged = {**docs[0], "results": [r for d in docs for r in d["results"]]}
        commands = "\n".join(d["command"] for d in docs)
        parts.append(f"## {title}\n\nCommands (from `bench/zoo.sh`):\n\n```\n{commands}\n```\n")
        parts.append(table(merged) + "\n")
        for r in merged["results"]:
            if r.get("codes"):
                parts.append(f"Semantic IDs ({r['model']}): {json.dumps(r['codes'])}\n")
        for d in (name, f"{name}-gen"):
            for png in sorted((RESULTS / d).glob("*.png")):
                parts.append(f"![{png.stem}](results/{d}/{png.name})\n")
    rating = [RESULTS / f"rating-ml100k-{k}" / "results.json" for k in ("random", "temporal")]
    if any(f.exists() for f in rating):
        parts.append("## Rating prediction (MovieLens-100K, explicit ratings)\n")
        parts.append("| split | model | RMSE | MAE | global-mean RMSE | fit s | peak MB |")
        parts.append("|---|---|---:|---:|---:|---:|---:|")
        commands = []
        for f in rating:
            if not f.exists():
                continue
            doc = json.loads(f.read_text())
            commands.append(doc["command"])
            for r in doc["results"]:
                m = r["metrics"]
                parts.append(
                    f"| {doc['spec']['split']} | {r['model']} | {m['rmse']:.4f} | {m['mae']:.4f} "
                    f"| {r['reference']['global_mean_rmse']:.4f} | {r['fit_seconds']:.1f} "
                    f"| {r['peak_rss_mb']:.0f} |"
                )
        parts.append("\nCommands (`bench/rating.sh`):\n\n```\n" + "\n".join(commands) + "\n```\n")
    caveats = ROOT / "docs" / "results" / "CAVEATS.md"
    if caveats.exists():
        parts.append(caveats.read_text())
    out = ROOT / "docs" / "benchmarks.md"
    out.write_text("\n".join(parts))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
