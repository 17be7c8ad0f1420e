"""The closed loop: fold the feedback received since training into the model.

`update_model` reads the store's interactions plus the feedback log, keeps the model's
user/item indices (new users and catalogue items are appended after them), and calls
`Recommender.update` on everything but each user's most recent interaction: warm-starting
models continue from their weights, the others refit with their own settings. That most
recent interaction is the validation target on which the update and the served version are
both scored (NDCG@10, full ranking); the update is published as the registry's next version
(a running service swaps to it) only if it is not worse than the served one by more than
`tolerance`, and if the canary (serve/canary.py: real lists for stored users, checked)
passes. Otherwise it is kept unpublished under `<registry>/.rejected/` and the reason
is returned. (The served version may have trained on some of those targets, which favours
it: the gate errs towards keeping what serves.)
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from directrec.data.dataset import Catalog, IdMap, Interactions, catalog_for
from directrec.data.histories import Histories
from directrec.data.preprocess import chronological_order
from directrec.data.split import Targets, leave_one_out
from directrec.data.store import open_store
from directrec.evaluate.protocol import evaluate
from directrec.generate.stages import load_pipeline
from directrec.models.base import Recommender
from directrec.models.candidates import Candidates
from directrec.recipes import Recipe, RecipeError
from directrec.serve import registry
from directrec.serve.canary import CanaryConfig, Refused
from directrec.serve.feedback import open_log
from directrec.serve.forgotten import drop_forgotten


@dataclass
class LoopData:
    interactions: Interactions
    users: IdMap
    items: IdMap
    catalog: Catalog
    forgotten: set[str]  # the store's forgotten-user hashes (checked again on publish)
    feedback_seq: int  # the newest feedback event included
    store_seq: int  # the newest store row included (ingest order)
    unseen: np.ndarray  # per row of `interactions`: newer than what the model was fit on
    new_users: int
    new_items: int


def loop_data(model: Recommender, db: str | Path, feedback: str | Path | None) -> LoopData:
    """Store interactions, then positive feedback events, indexed so that every index the
    model knows keeps its meaning."""
    with open_store(db) as store:
        inter, items, forgotten = store.interactions(), store.items(), store.forgotten()
    rows = inter[["user_id", "item_id", "timestamp"]].astype({"user_id": str, "item_id": str})
    # What the model was fit on: store rows up to its watermark, feedback up to its own.
    store_seen = model.meta.get("store_seq")
    fb_seen = int(model.meta.get("feedback_seq", 0))
    line = inter["line"].to_numpy(dtype=np.int64)
    rows = rows.assign(
        order=np.arange(len(rows)), unseen=line > store_seen if store_seen is not None else False
    )
    seq = 0
    log = open_log(feedback) if feedback is not None else None
    if log is not None:
        try:
            events = log.events()
        finally:
            log.close()
        if events:
            seq = events[-1][0]
            fb = pd.DataFrame(
                [(e.user_id, e.item_id, e.ts, n > fb_seen) for n, e in events if e.positive],
                columns=["user_id", "item_id", "timestamp", "unseen"],
            )
            fb = fb.assign(order=np.arange(len(fb)) + len(rows))
            rows = pd.concat([rows, fb], ignore_index=True)
    old_items = [str(x) for x in model.meta.get("item_ids", [])]
    # Users forgotten since the model was fit keep their index under a placeholder id;
    # the refit has none of their rows, so the update holds nothing of them.
    old_users, _ = drop_forgotten([str(x) for x in model.meta.get("user_ids", [])], forgotten)
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
    rows = rows.sort_values("order", kind="stable")
    rows = rows.iloc[chronological_order(rows)]  # the one ordering rule (time, then arrival)
    u = users.indices(rows["user_id"].tolist())
    i = item_map.indices(rows["item_id"].tolist())
    ts = rows["timestamp"].to_numpy(dtype="float64", na_value=0.0)
    order = np.argsort(u, kind="stable")
    data = Interactions(
        u[order],
        i[order],
        n_users=len(users),
        n_items=len(item_map),
        timestamp=ts[order].astype(np.int64),
    )
    unseen = rows["unseen"].to_numpy(dtype=bool)[order]
    store_seq = int(line.max(initial=0))
    return LoopData(
        data,
        users,
        item_map,
        catalog_for(items, item_map.ids),
        forgotten,
        seq,
        store_seq,
        unseen,
        len(new_u),
        len(new_i),
    )


class GrownIndex(Recommender):
    """A model seen through a larger index: users and items it does not know are treated
    as unknown (items new to it are never recommended), so it can be scored beside its
    update on the same validation data."""

    name = "grown-index"

    def __init__(self, inner: Recommender, n_users: int, n_items: int) -> None:
        super().__init__()
        self.inner, self.n_users, self.n_items = inner, n_users, n_items
        self.capabilities = inner.capabilities
        self.popularity = np.zeros(n_items, dtype=np.float32)
        self.popularity[: inner.n_items] = inner.popularity

    def fallback(self, histories: Histories, requests: Sequence[str] | None = None) -> np.ndarray:
        return self.inner.fallback(self._inner_view(histories), requests)

    def _inner_view(self, h: Histories) -> Histories:
        rows = h.row_of_items()
        keep = h.items < self.inner.n_items
        lists = [h.items[keep & (rows == r)] for r in range(len(h))]
        users = np.where(h.users < self.inner.n_users, h.users, -1)
        return Histories.from_lists(lists, self.inner.n_items, users)

    def score(
        self,
        histories: Histories,
        k: int | None = None,
        requests: Sequence[str] | None = None,
    ) -> torch.Tensor:
        inner = self.inner.score(self._inner_view(histories), k, requests)
        out = torch.full((len(histories), self.n_items), -torch.inf)
        out[:, : self.inner.n_items] = inner
        return out

    def top(
        self,
        histories: Histories,
        k: int,
        requests: Sequence[str] | None = None,
        exclude: sp.csr_matrix | None = None,
        keep: torch.Tensor | None = None,
    ) -> Candidates:
        inner = None if exclude is None else exclude[:, : self.inner.n_items]
        # items new to the grown index are no candidates of the inner model
        known = None if keep is None else torch.where(keep < self.inner.n_items, keep, -1)
        return self.inner.top(self._inner_view(histories), k, requests, inner, known)


def check_update_recipe(recipe: Recipe, model: str, fitted: Sequence[str]) -> None:
    """Refuse a recipe an update cannot follow: another model, or other stages than the
    parent's fitted ones (an update keeps those as they are)."""
    if recipe.model != model:
        raise RecipeError(
            f"recipe {recipe.name!r} is for {recipe.model}, the served model is {model}: "
            "train a new model for it"
        )
    if set(recipe.stages) != set(fitted):
        raise RecipeError(
            f"recipe {recipe.name!r} names stages [{', '.join(sorted(recipe.stages))}], the "
            f"served model has [{', '.join(sorted(fitted))}]; an update keeps its parent's "
            "fitted stages: train a new model for others"
        )


def update_model(
    model_path: str | Path,
    db: str | Path,
    feedback: str | Path | None,
    out_registry: str | Path,
    epochs: int = 3,
    tolerance: float = 0.02,
    min_gate_users: int = 20,
    canary: CanaryConfig = CanaryConfig(),
    recipe: Recipe | None = None,
) -> tuple[str | None, dict]:
    """Update the current model on store + feedback, gate it on validation NDCG@10 against
    the served version, publish it if it passes. Returns (version or None, facts); when
    not published, facts["reason"] says why and facts["kept_at"] where it is.

    The gate's targets are the users whose most recent interaction the served version has
    not seen (newer than its watermark: store rows past `store_seq`, feedback past
    `feedback_seq`); neither model trained on them. With fewer than `min_gate_users` such
    users there is too little to compare on: the update is published and the facts say
    the gate was skipped.

    `recipe` (same model) sets the update's training settings (all settings for a model
    that refits); the parent's fitted stages carry over, so a recipe naming other stages
    is refused. The update stores the recipe it ran under."""
    model_dir, parent = registry.resolve(model_path)
    model, stages = load_pipeline(model_dir)  # the stages carry over to the update as fitted
    if recipe is not None:
        check_update_recipe(recipe, model.name, stages.fitted())
    ld = loop_data(model, db, feedback)
    catalog = ld.catalog
    if model.capabilities.needs_text or model.capabilities.cold_items:
        from directrec.data.dataset import Dataset
        from directrec.text.features import item_features, of_model

        ds = Dataset(ld.interactions, ld.users, ld.items, catalog)
        catalog.features = of_model(model)  # what the parent read
        catalog.embeddings = item_features(ds, None, catalog.features)
    split = leave_one_out(ld.interactions)
    fit = Interactions.concat(split.train, split.valid)  # all but each user's last
    t0 = time.perf_counter()
    new = model.update(fit, catalog, epochs=epochs, settings=recipe.settings if recipe else None)
    fit_s = time.perf_counter() - t0
    targets = split.test_targets
    last_row = ld.interactions.indptr[targets.users + 1] - 1
    fresh = ld.unseen[last_row]
    gate = Targets(
        targets.users[fresh],
        np.arange(int(fresh.sum()) + 1),
        targets.items[targets.indptr[:-1]][fresh],
    )
    ndcg_new = ndcg_old = None
    if len(gate) >= max(min_gate_users, 1):
        # Both compared through the same stages; the cold gate needs the model's own
        # cold-item view, which the served model seen through a grown index lacks, and
        # the re-ranking (diversify) is the same list-building step for both.
        same = dataclasses.replace(stages, cold_gate=None, diversify=None)
        ndcg_new = evaluate(new, fit, gate, (10,), stages=same).metrics["ndcg@10"]
        served = GrownIndex(model, ld.interactions.n_users, ld.interactions.n_items)
        ndcg_old = evaluate(served, fit, gate, (10,), stages=same).metrics["ndcg@10"]
    new.meta.update(
        user_ids=ld.users.ids.tolist(),
        item_ids=ld.items.ids.tolist(),
        feedback_seq=ld.feedback_seq,
        store_seq=ld.store_seq,
        parent_version=parent,
        data_fingerprint=ld.interactions.fingerprint(),
        update_valid_ndcg10=ndcg_new,
        parent_valid_ndcg10=ndcg_old,
    )
    if recipe is not None:
        new.meta["recipe"] = recipe.to_dict()
    facts: dict = {
        "parent": parent,
        "interactions": len(ld.interactions),
        "new_users": ld.new_users,
        "new_items": ld.new_items,
        "feedback_seq": ld.feedback_seq,
        "epochs": epochs,
        "warm_start": model.capabilities.warm_start,
        "fit_seconds": round(fit_s, 2),
        "gate_users": len(gate),
        "valid_ndcg@10": ndcg_new,
        "served_valid_ndcg@10": ndcg_old,
        "gate": "compared"
        if ndcg_new is not None
        else f"skipped: {len(gate)} users with unseen interactions (< {min_gate_users})",
    }
    Path(out_registry).mkdir(parents=True, exist_ok=True)
    if ndcg_new is not None and ndcg_new < ndcg_old * (1 - tolerance):
        kept = Path(out_registry) / ".rejected" / f"from-{parent or 'model'}-{time.time_ns()}"
        new.save(kept, extra=stages.files())
        facts |= {
            "published": False,
            "kept_at": str(kept),
            "reason": (
                f"validation NDCG@10 {ndcg_new:.4f} is {100 * (1 - ndcg_new / ndcg_old):.1f}% below "
                f"the served version's {ndcg_old:.4f} (tolerance {100 * tolerance:g}%)"
            ),
        }
        return None, facts
    with tempfile.TemporaryDirectory(dir=out_registry, prefix=".update.") as tmp:
        new.save(Path(tmp) / "model", extra=stages.files())
        try:  # the canary on the store's users (serve/canary.py), then the next number
            version = registry.publish(
                Path(tmp) / "model", out_registry, db=db, canary=canary, forgotten=ld.forgotten
            )
        except Refused as e:
            kept = Path(out_registry) / ".rejected" / f"from-{parent or 'model'}-{time.time_ns()}"
            shutil.copytree(Path(tmp) / "model", kept)
            facts |= {
                "published": False,
                "kept_at": str(kept),
                "refused": e.reason,
                "reason": f"the canary refused the update ({e.reason}): {e}",
            }
            return None, facts
    facts |= {"published": True, "version": version}
    return version, facts
