"""Re-ranking a generated candidate list: diversity (maximal marginal relevance) and
business filters. Works on any model's candidates, so the generators stay untouched."""

from __future__ import annotations

import numpy as np


def mmr(
    items: np.ndarray, scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pick `k` of the candidates `items` (best first, with `scores`) greedily by
    (1 − diversity) · relevance − diversity · (max cosine similarity to those already
    picked); relevance is the score min-max scaled over the candidates. diversity = 0
    keeps the model's order; 1 picks the most mutually dissimilar items.
    `vectors[i]` is item i's L2-normalised embedding."""
    items, scores = np.asarray(items), np.asarray(scores, dtype=np.float64)
    keep = items >= 0
    items, scores = items[keep], scores[keep]
    if diversity <= 0 or len(items) <= 1:
        return items[:k], scores[:k]
    finite = np.isfinite(scores)
    lo, hi = scores[finite].min(initial=0.0), scores[finite].max(initial=1.0)
    rel = np.where(finite, (scores - lo) / (hi - lo if hi > lo else 1.0), 0.0)
    v = vectors[items].astype(np.float64)
    sim = v @ v.T
    picked: list[int] = []
    max_sim = np.full(len(items), -np.inf)
    left = np.ones(len(items), dtype=bool)
    for _ in range(min(k, len(items))):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = np.where(left, (1 - diversity) * rel - diversity * penalty, -np.inf)
        j = int(np.argmax(gain))
        picked.append(j)
        left[j] = False
        max_sim = np.maximum(max_sim, sim[j])
    idx = np.array(picked, dtype=np.int64)
    return items[idx], scores[idx]


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): cosines by dot products."""
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def category_filter(
    items: np.ndarray, categories: list[list[str]], exclude: set[str]
) -> np.ndarray:
    """Mask of candidates that carry none of the `exclude` categories."""
    if not exclude:
        return np.ones(len(items), dtype=bool)
    return np.array([i >= 0 and not exclude & set(categories[i]) for i in items], dtype=bool)
