"""The closed loop: fold the feedback received since training into the model.

`update_model` reads the store's interactions plus the feedback log, keeps the model's
user/item indices (new users and catalogue items are appended after them), fine-tunes
(`Recommender.update`) and publishes the result as the registry's next version, which a
running service then swaps to.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from directrec.data.dataset import Catalog, IdMap, Interactions, catalog_for
from directrec.data.store import Store
from directrec.models import load_model
from directrec.models.base import Recommender
from directrec.serve import registry
from directrec.serve.feedback import FeedbackLog


@dataclass
class LoopData:
    interactions: Interactions
    users: IdMap
    items: IdMap
    catalog: Catalog
    feedback_seq: int  # the newest feedback event included
    new_users: int
    new_items: int


def loop_data(model: Recommender, db: str | Path, feedback: str | Path | None) -> LoopData:
    """Store interactions, then positive feedback events, indexed so that every index the
    model knows keeps its meaning."""
    with Store(db) as store:
        inter, items = store.interactions(), store.items()
    rows = inter[["user_id", "item_id", "timestamp"]].astype({"user_id": str, "item_id": str})
    rows = rows.assign(order=np.arange(len(rows)))
    seq = 0
    if feedback is not None and Path(feedback).exists():
        log = FeedbackLog(feedback)
        try:
            events = log.events()
        finally:
            log.close()
        if events:
            seq = events[-1][0]
            fb = pd.DataFrame(
                [(e.user_id, e.item_id, e.ts) for _, e in events if e.positive],
                columns=["user_id", "item_id", "timestamp"],
            )
            fb = fb.assign(order=np.arange(len(fb)) + len(rows))
            rows = pd.concat([rows, fb], ignore_index=True)
    old_items = [str(x) for x in model.meta.get("item_ids", [])]
    old_users = [str(x) for x in model.meta.get("user_ids", [])]
    if len(old_items) != model.n_items:
        raise ValueError("the model carries no item id map; retrain it with `directrec train`")
    catalogue = set(items["item_id"].astype(str)) | set(old_items)
    rows = rows[rows["item_id"].isin(catalogue)]  # feedback on unknown items is not learnable
    known_i = set(old_items)
    new_i = sorted({*items["item_id"].astype(str), *rows["item_id"]} - known_i)
    known_u = set(old_users)
    new_u = sorted(set(rows["user_id"]) - known_u)
    users, item_map = (
        IdMap(np.array(old_users + new_u, dtype=object)),
        IdMap(np.array(old_items + new_i, dtype=object)),
    )
    u = users.indices(rows["user_id"].tolist())
    i = item_map.indices(rows["item_id"].tolist())
    ts = rows["timestamp"].to_numpy(dtype="float64", na_value=0.0)
    order = np.lexsort((rows["order"].to_numpy(), ts, u))
    data = Interactions(u[order], i[order], n_users=len(users), n_items=len(item_map),
                        timestamp=ts[order].astype(np.int64))  # fmt: skip
    return LoopData(
        data, users, item_map, catalog_for(items, item_map.ids), seq, len(new_u), len(new_i)
    )


def update_model(
    model_path: str | Path,
    db: str | Path,
    feedback: str | Path | None,
    out_registry: str | Path,
    epochs: int = 3,
) -> tuple[str, dict]:
    """Fine-tune the current model on store + feedback; publish it; returns (version, facts)."""
    model_dir, parent = registry.resolve(model_path)
    model = load_model(model_dir)
    ld = loop_data(model, db, feedback)
    catalog = ld.catalog
    if model.capabilities.needs_text:
        from directrec.data.dataset import Dataset
        from directrec.text.encoder import item_embeddings

        ds = Dataset(ld.interactions, ld.users, ld.items, catalog)
        catalog.embeddings = item_embeddings(ds, None)
    new = model.update(ld.interactions, catalog, epochs=epochs)
    new.meta.update(
        user_ids=ld.users.ids.tolist(), item_ids=ld.items.ids.tolist(), feedback_seq=ld.feedback_seq,
        parent_version=parent, data_fingerprint=ld.interactions.fingerprint(),
    )  # fmt: skip
    Path(out_registry).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_registry, prefix=".update.") as tmp:
        new.save(Path(tmp) / "model")
        version = registry.publish(Path(tmp) / "model", out_registry)
    facts = {"version": version, "parent": parent, "interactions": len(ld.interactions),
             "new_users": ld.new_users, "new_items": ld.new_items,
             "feedback_seq": ld.feedback_seq, "epochs": epochs}  # fmt: skip
    return version, facts
