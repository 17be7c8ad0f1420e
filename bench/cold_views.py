"""How well can text alone rank cold items? TIGER's cold split as bench/coldstart.py draws
it (same seed): for each test case whose target is a held-out item, rank only the held-out
items by cosine to the user's recent (warm) history, in several views. The share of cases
whose target lands in the top 1, 2, 3, 5, 10 bounds what a cold gate with that many slots
can reach. Written as JSON with the exact command.

    python bench/cold_views.py --db out/bench/beauty.duckdb --out docs/results/coldstart/views-beauty.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from directrec.data.dataset import Dataset
from directrec.data.split import leave_one_out
from directrec.text.encoder import item_embeddings


def ranks_among(sims: np.ndarray, target_col: np.ndarray) -> dict[str, float]:
    """Share of rows whose target column is within the top k of its row, for several k."""
    s_t = sims[np.arange(len(sims)), target_col]
    rank = (sims > s_t[:, None]).sum(1)
    return {f"top{k}": round(float((rank < k).mean()), 4) for k in (1, 2, 3, 5, 10, 20)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--holdout", type=float, default=0.05)
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    ds = Dataset.from_store(args.db)
    emb = item_embeddings(ds, args.db).astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    n = ds.interactions.n_items
    rng = np.random.default_rng(args.seed)  # the draw bench/coldstart.py makes
    cold = np.sort(rng.choice(n, round(args.holdout * n), replace=False))
    is_cold = np.zeros(n, bool)
    is_cold[cold] = True
    _, hist, test = leave_one_out(ds.interactions).stage("test", args.max_history)
    warm = hist.select(~is_cold[hist.item])
    first = test.items[test.indptr[:-1]]
    cases = np.flatnonzero(is_cold[first] & (np.diff(test.indptr) > 0))
    users, col = test.users[cases], np.searchsorted(cold, first[cases])
    last = np.full((len(users), 3), -1)  # the last 3 warm items, newest first
    for r, u in enumerate(users):
        s = warm.item[warm.indptr[u] : warm.indptr[u + 1]][-3:][::-1]
        last[r, : len(s)] = s
    keep = last[:, 0] >= 0
    last, col = last[keep], col[keep]

    def view(z: np.ndarray) -> dict[str, dict[str, float]]:
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        per = [np.where(last[:, [j]] >= 0, z[last[:, j]] @ z[cold].T, -9.0) for j in range(3)]
        centroid = sum(np.where(last[:, [j]] >= 0, 1.0, 0.0) * z[last[:, j]] for j in range(3))
        return {
            "last item": ranks_among(per[0], col),
            "best of last 3 (-0.05 per step back)": ranks_among(
                np.max([s - 0.05 * j for j, s in enumerate(per)], 0), col
            ),
            "centroid of last 3": ranks_among(centroid @ z[cold].T, col),
        }

    warm_rows = emb[~is_cold]
    _, _, vt = np.linalg.svd(warm_rows - warm_rows.mean(0), full_matrices=False)
    res = {
        "command": "python " + " ".join(sys.argv),
        "db": str(args.db),
        "seed": args.seed,
        "split": "leave-one-out, 5 % of items held out of training (bench/coldstart.py items)",
        "cold_items": len(cold),
        "cold_cases": len(col),
        "ranked_among": "the held-out items only",
        "text (MiniLM, 384-d)": view(emb),
        "text PCA-64": view(emb @ vt[:64].T),
        "text PCA-32 (the RQ-VAE latent's size)": view(emb @ vt[:32].T),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
