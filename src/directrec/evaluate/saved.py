"""Evaluate a saved model on a store without refitting it (`directrec evaluate`).

The store is indexed and split as the benchmark does; its users and items are then mapped
onto the model's own index by raw id. Items the model does not know are left out of the
inputs, and targets on them are counted and dropped (reported as `targets_unknown_item`);
users it does not know keep an index past its users (per-user models fall back for them).
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from directrec.data.dataset import Dataset, IdMap, Interactions
from directrec.data.split import Targets, make_split
from directrec.data.store import describe
from directrec.evaluate.protocol import codes_view, evaluate
from directrec.evaluate.report import stopped_text
from directrec.generate.stages import Stages
from directrec.models.base import Recommender


def dataset_facts(db: str | Path, ds: Dataset) -> dict[str, Any]:
    """What a results document says of the data: the store, its fingerprint and sizes."""
    return {
        "db": describe(db),
        "fingerprint": ds.fingerprint,
        "users": ds.interactions.n_users,
        "items": ds.interactions.n_items,
        "interactions": len(ds.interactions),
    }


def stamp(model: Recommender, ds: Dataset, db: str | Path) -> None:
    """Record in `model.meta` what reading it against a store later needs: the raw user
    and item ids behind its indices, the data's fingerprint and where it came from."""
    model.meta.update(
        data_fingerprint=ds.fingerprint,
        db=describe(db),
        user_ids=ds.users.ids.tolist(),
        item_ids=ds.items.ids.tolist(),
    )


def remap(
    data: Interactions, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> Interactions:
    """`data` on another index: users[u] / items[i] give the new indices (-1 = drop the
    row). Each user's order is kept."""
    u, i = users[data.user], items[data.item]
    keep = (u >= 0) & (i >= 0)
    order = np.lexsort((np.arange(keep.sum()), u[keep]))  # stable: per-user order kept
    pick = np.flatnonzero(keep)[order]
    return Interactions(
        users[data.user[pick]],
        items[data.item[pick]],
        n_users,
        n_items,
        None if data.rating is None else data.rating[pick],
        None if data.timestamp is None else data.timestamp[pick],
    )


def _remap_targets(t: Targets, users: np.ndarray, items: np.ndarray) -> tuple[Targets, int]:
    rows = np.repeat(np.arange(len(t)), np.diff(t.indptr))
    new_items = items[t.items]
    keep = new_items >= 0
    counts = np.bincount(rows[keep], minlength=len(t))
    has = counts > 0
    out = Targets(
        users[t.users][has], np.concatenate([[0], np.cumsum(counts[has])]), new_items[keep]
    )
    return out, int((~keep).sum())


def evaluate_saved(
    model: Recommender,
    db: str | Path,
    *,
    split: str = "loo",
    stage: str = "test",
    ks: tuple[int, ...] = (10, 20),
    max_history: int | None = None,
    batch_size: int = 1024,
    stages: Stages | None = None,
) -> dict[str, Any]:
    """A results document (the benchmark's format) for `model` (with its fitted `stages`)
    on `db`'s split."""
    ds = Dataset.from_store(db)
    model_items = IdMap(np.array(model.meta.get("item_ids", []), dtype=object))
    if len(model_items) != model.n_items:
        raise ValueError("the model carries no item id map (saved without `train`?)")
    model_users = IdMap(np.array(model.meta.get("user_ids", []), dtype=object))
    items = model_items.indices(ds.items.ids.tolist())
    users = model_users.indices(ds.users.ids.tolist())
    unknown = users < 0  # new users get indices after the model's own
    users[unknown] = max(model.n_users, len(model_users)) + np.arange(unknown.sum())
    n_users = int(users.max(initial=-1)) + 1
    sp = make_split(ds.interactions, split)
    _, seen, targets = sp.stage(stage, max_history)
    inputs = sp.inputs(stage, max_history)
    inputs = remap(inputs, users, items, n_users, model.n_items)
    seen = remap(seen, users, items, n_users, model.n_items)
    targets, dropped = _remap_targets(targets, users, items)
    vectors = None
    if stages is not None and stages.diversify is not None:
        from directrec.text.features import item_features, of_model

        # the vectors the model read (the store's cache, else computed), in its own index
        own = item_features(ds, db, of_model(model))
        if own is not None:
            vectors = np.zeros((model.n_items, own.shape[1]), dtype=np.float32)
            vectors[items[items >= 0]] = own[items >= 0]
    t0 = time.perf_counter()
    result = evaluate(
        model,
        inputs,
        targets,
        ks,
        seen=seen,
        batch_size=batch_size,
        stages=stages,
        item_vectors=vectors,
        codes_only=codes_view(model),
    )
    notes = []
    if model.meta.get("holdout") == "none" and stage == "test":
        notes.append(
            "the model was trained on every interaction, these test items included: "
            "train with --holdout loo for an honest figure"
        )
    if model.meta.get("data_fingerprint") not in (None, ds.fingerprint):
        notes.append("the store differs from the data the model was trained on")
    return {
        "command": " ".join(sys.argv),
        "spec": {
            "db": describe(db),
            "models": [model.name],
            "task": "topn",
            "split": split,
            "ks": list(ks),
            "max_history": max_history,
            "seed": None,
            "stage": stage,
        },
        "dataset": dataset_facts(db, ds),
        "split": {
            "kind": split,
            "evaluated_users": result.n_users,
            "targets_unknown_item": dropped,
        },
        "protocol": "saved model, not refitted; full ranking over the model's items; seen "
        "items excluded; ties counted in the target's favour",
        "environment": {"python": platform.python_version(), "machine": platform.machine()},
        "notes": notes,
        "results": [
            {
                "model": model.name,
                "fit_seconds": 0.0,
                "eval_seconds": round(time.perf_counter() - t0, 3),
                "peak_rss_mb": 0.0,
                "stages": stages.fitted() if stages is not None else [],
                "stopped": stopped_text(model.meta),  # how its training ended
                **result.as_dict(),
            }
        ],
    }
