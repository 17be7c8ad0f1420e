"""Cold start for new users: a sentence ("sci-fi and thrillers from the 90s") or one or two
items is turned into a history the generator can read. The sentence is embedded with the
same text encoder as the items (all-MiniLM-L6-v2) and its nearest items become a pseudo
history, most similar last (the position a sequence model weighs most)."""

from __future__ import annotations

import numpy as np


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
