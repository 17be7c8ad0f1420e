"""The accuracy–diversity trade-off: re-rank each user's candidates with MMR at several
settings of the diversity knob and measure NDCG/recall against intra-list diversity."""

from __future__ import annotations

import numpy as np

from directrec.data.dataset import Interactions
from directrec.data.histories import Histories
from directrec.data.split import Targets
from directrec.generate.fitting import mmr_sweep
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
    seen = history.matrix("binary")
    rows = np.arange(len(targets))
    if max_users is not None and len(rows) > max_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
    users = targets.users[rows]
    truths = [
        set(targets.items[targets.indptr[r] : targets.indptr[r + 1]].tolist())
        - set(seen[u].indices.tolist())
        for r, u in zip(rows, users, strict=True)
    ]
    return mmr_sweep(
        model,
        Histories.from_interactions(inputs, users),
        truths,
        vectors,
        knobs,
        k,
        pool,
        seen=seen[users],
        batch_size=batch_size,
    )
