"""Cold start for new users: a sentence ("sci-fi and thrillers from the 90s") or one or two
items is turned into a history the generator can read. The sentence is embedded with the
same text encoder as the items (all-MiniLM-L6-v2) and its nearest items become a pseudo
history, most similar last (the position a sequence model weighs most).

A history of one or two items says little, and a sequence model trained on long histories
over-reads it; `fit_prior_blend` learns, on validation users, how much popularity to mix
into the model's distribution at each short length (Recommender.score applies it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from directrec.data.histories import Histories
from directrec.models.base import Recommender

BLEND_LENGTHS = (1, 2, 3, 5, 10)


def sentence_history(
    query_vector: np.ndarray,
    item_vectors: np.ndarray,
    n: int = 5,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """The `n` items whose text is closest to the query (L2-normalised vectors), least
    similar first. `allowed` masks items the model can read (e.g. known to it)."""
    sims = item_vectors @ query_vector
    if allowed is not None:
        sims = np.where(allowed, sims, -np.inf)
    top = np.argsort(-sims, kind="stable")[:n]
    top = top[np.isfinite(sims[top])]
    return top[::-1].astype(np.int64)


def fit_prior_blend(
    model: Recommender,
    sequences: Sequence[np.ndarray],
    lengths: Sequence[int] = BLEND_LENGTHS,
    k: int = 10,
    grid: Sequence[float] = tuple(np.linspace(0.0, 1.0, 21)),
) -> dict:
    """Learn the popularity weight per history length on validation users' sequences (not
    trained on): each is cut to its first L items, the next `k` items are the targets, and
    the weight with the best Recall@k wins (ties: the smaller). Stored in
    `model.meta["prior_blend"]`; returns the table with each length's recall before and after."""
    saved = model.meta.pop("prior_blend", None)
    pop = torch.from_numpy(model.popularity).float()
    pop = pop / pop.sum().clamp(min=1e-12)
    table = {"lengths": [], "alpha": [], "cases": [], "recall_model": [], "recall_blend": []}
    try:
        for length in lengths:
            rows = [s for s in sequences if len(s) >= length + 1]
            if len(rows) < 20:
                continue
            hist = Histories.from_lists([s[:length] for s in rows], model.n_items)
            truth = [set(s[length : length + k].tolist()) for s in rows]
            scores = model.score(hist)
            seen = torch.from_numpy(hist.matrix("binary").toarray() > 0)
            p = torch.softmax(scores, dim=1)
            best, recalls = (0.0, -1.0), []
            for a in grid:
                mixed = ((1 - a) * p + a * pop).masked_fill(seen, -1.0)
                top = torch.topk(mixed, k, dim=1).indices.numpy()
                rec = float(
                    np.mean([len(t & set(r.tolist())) / k for r, t in zip(top, truth, strict=True)])
                )
                recalls.append(rec)
                if rec > best[1] + 1e-12:
                    best = (float(a), rec)
            table["lengths"].append(int(length))
            table["alpha"].append(best[0])
            table["cases"].append(len(rows))
            table["recall_model"].append(recalls[0])
            table["recall_blend"].append(best[1])
    finally:
        if saved is not None:
            model.meta["prior_blend"] = saved
    if table["lengths"]:
        model.meta["prior_blend"] = {"lengths": table["lengths"], "alpha": table["alpha"]}
    return table
