"""What one training epoch of `semantic-id` costs with plain random batches and with
batches of similar length (`length_batches`), on a store's data: the seconds of each epoch
and the positions the network computes against the real tokens. Written as JSON with the
exact command.

    python bench/semantic_epoch.py --db out/bench/beauty.duckdb [--recipe semantic-id]

Every setting but `epochs` (1) and `length_batches` is the recipe's; no validation runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from directrec.data.dataset import Dataset
from directrec.models import create
from directrec.models.semantic import SemanticID
from directrec.recipes import resolve
from directrec.text.features import for_model


def one_epoch(ds: Dataset, db: str, settings: dict, length_batches: bool) -> dict:
    """Fit for one epoch; the epoch's wall time and the positions its batches computed."""
    model = create("semantic-id", {**settings, "epochs": 1, "length_batches": length_batches})
    for_model(model, ds, db)
    out: dict = {}
    epoch = SemanticID._epoch_causal

    def timed(self, windows, *args):  # the epoch alone (the codes are fit before it)
        t0 = time.perf_counter()
        loss = epoch(self, windows, *args)
        out["epoch_seconds"] = round(time.perf_counter() - t0, 1)
        out["windows"] = len(windows)
        out["real_tokens"] = int((windows >= 0).sum())
        return loss

    import directrec.models.semantic.train as semantic_model

    real_batches = semantic_model.batches

    def counted(real, size, by_length):
        cut = real_batches(real, size, by_length)
        lengths = real.sum(1)
        out["computed_positions"] = sum(int(lengths[b].max()) * len(b) for b in cut)
        return cut

    SemanticID._epoch_causal = timed
    semantic_model.batches = counted
    try:
        model.fit(ds.interactions, ds.catalog)
    finally:
        SemanticID._epoch_causal = epoch
        semantic_model.batches = real_batches
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--db", required=True)
    p.add_argument("--recipe", default="semantic-id")
    p.add_argument("--repeats", type=int, default=1, help="epochs timed per arm (best kept)")
    p.add_argument("--out", type=Path, default=Path("docs/results/epoch-cost"))
    args = p.parse_args()
    recipe = resolve(args.recipe)
    if recipe.model != "semantic-id":
        raise SystemExit(f"recipe {recipe.name} trains {recipe.model}, not semantic-id")
    settings = {k: v for k, v in recipe.settings.items() if k != "length_batches"}
    if settings.get("arch", "causal") != "causal":
        raise SystemExit("length batches are the causal head's: the recipe trains encdec")
    ds = Dataset.from_store(args.db)
    runs: dict[str, dict] = {"length_batches": {}, "random_batches": {}}
    for _ in range(args.repeats):  # the arms alternate, length batches first (a cold process)
        for arm in runs:
            got = one_epoch(ds, args.db, settings, arm == "length_batches")
            seconds = [*runs[arm].get("epoch_seconds_each", []), got.pop("epoch_seconds")]
            runs[arm] = {**got, "epoch_seconds_each": seconds, "epoch_seconds": min(seconds)}
    doc = {
        "command": " ".join(["python", *sys.argv]),
        "db": args.db,
        "recipe": recipe.name,
        "settings": settings,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": len(os.sched_getaffinity(0)),
            "threads": torch.get_num_threads(),
        },
        **runs,
        "speedup": round(
            runs["random_batches"]["epoch_seconds"] / runs["length_batches"]["epoch_seconds"], 2
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    dest = args.out / f"semantic-{Path(args.db).stem}.json"
    dest.write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
