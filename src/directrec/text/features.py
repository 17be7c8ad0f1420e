"""Which item content becomes `catalog.embeddings`: the text (all-MiniLM-L6-v2), the image
(EfficientNet-Lite0), or both. Everything that reads item vectors (the `content` model,
semantic IDs and their cold-item gate, MMR diversity) reads whatever this returns, so the
`item_features` setting is the one place the choice is made.

"both" concatenates the two L2-normalised parts and normalises the row again: an item
with both halves weighs them equally (cosine = mean of the text and image cosines), an
item with only one is still a unit vector, so it is not pushed away from every other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from directrec.data.dataset import Dataset

FEATURES = ("text", "image", "both")


def check(features: str) -> str:
    if features not in FEATURES:
        raise ValueError(f"item_features must be one of {', '.join(FEATURES)}, not {features!r}")
    return features


def of_model(model: Any) -> str:
    """The item features a model reads: what it was fit on (its meta), else its setting."""
    return str(model.meta.get("item_features") or model.run.item_features)


def for_model(
    model: Any, dataset: Dataset, db: str | Path | None = None, progress: bool = False
) -> np.ndarray | None:
    """Give `dataset.catalog` the item vectors of the model's `item_features` (kept if it
    holds them already) and record the choice in the model's meta for whoever loads it."""
    features = of_model(model)
    model.meta["item_features"] = features
    cat = dataset.catalog
    if cat.embeddings is None or cat.features != features:
        cat.embeddings = item_features(dataset, db, features, progress=progress)
        cat.features = features
    return cat.embeddings


def item_features(
    dataset: Dataset, db: str | Path | None = None, features: str = "text", progress: bool = False
) -> np.ndarray | None:
    """Every item's L2-normalised vector of `features` (cached in the store `db` if given);
    None when the catalogue has nothing of that kind."""
    check(features)
    cat = dataset.catalog
    parts = []
    if features in ("text", "both") and cat.has_text:
        from directrec.text.encoder import item_embeddings

        parts.append(item_embeddings(dataset, db, progress=progress))
    if features in ("image", "both") and cat.has_images:
        from directrec.text.images import item_image_embeddings

        parts.append(item_image_embeddings(dataset, db, progress=progress))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    joint = np.concatenate(parts, axis=1)
    norms = np.linalg.norm(joint, axis=1, keepdims=True)
    return (joint / np.where(norms > 0, norms, 1.0)).astype(np.float32)
