"""The accuracy–diversity trade-off: re-rank each user's candidates with MMR at several
settings of the diversity knob and measure NDCG/recall against intra-list diversity."""

from __future__ import annotations

import numpy as np
import torch

from directrec.data.dataset import Interactions
from directrec.data.histories import Histories
from directrec.data.split import Targets
from directrec.generate.pipeline import mask_rows, masked_scores
from directrec.generate.rerank import mmr
from directrec.models.base import Recommender


def diversity_sweep(
    model: Recommender,
    inputs: Interactions,
    history: Interactions,
    targets: Targets,
    vectors: np.ndarray,
    knobs: list[float],
    k: int = 10,
    pool: int = 50,
    max_users: int | None = 2000,
    seed: int = 0,
    batch_size: int = 512,
) -> list[dict[str, float]]:
    """Per knob value: recall@k, ndcg@k and mean pairwise cosine distance (ILD@k) of the
    re-ranked lists, over (a seeded sample of) the evaluated users. Full ranking first:
    the pool is the model's top `pool` unseen items over the whole catalogue."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.maximum(norms, 1e-12)
    seen = history.matrix("binary")
    rows = np.arange(len(targets))
    if max_users is not None and len(rows) > max_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
    sums = {kn: np.zeros(3) for kn in knobs}
    count = 0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for b in range(0, len(rows), batch_size):
        idx = rows[b : b + batch_size]
        users = targets.users[idx]
        scores = masked_scores(model, Histories.from_interactions(inputs, users), pool)
        mask_rows(scores, seen[users])
        top = torch.topk(scores, min(pool, model.n_items), dim=1)
        cand, vals = top.indices.numpy(), top.values.numpy()
        for n, row in enumerate(idx):
            truth = set(targets.items[targets.indptr[row] : targets.indptr[row + 1]].tolist())
            truth -= set(seen[users[n]].indices.tolist())
            if not truth:
                continue
            count += 1
            ok = np.isfinite(vals[n])
            ideal = discount[: min(len(truth), k)].sum()
            for kn in knobs:
                items, _ = mmr(cand[n][ok], vals[n][ok], vectors, k, kn)
                hit = np.array([i in truth for i in items], dtype=np.float64)
                v = vectors[items]
                sim = v @ v.T
                m = len(items)
                ild = float((1 - sim)[np.triu_indices(m, 1)].mean()) if m > 1 else 0.0
                sums[kn] += (
                    hit.sum() / min(len(truth), k),
                    (hit * discount[:m]).sum() / ideal,
                    ild,
                )
    return [
        {
            "diversity": kn,
            f"recall@{k}": float(s[0] / max(count, 1)),
            f"ndcg@{k}": float(s[1] / max(count, 1)),
            f"ild@{k}": float(s[2] / max(count, 1)),
            "users": count,
        }
        for kn, s in sums.items()
    ]
