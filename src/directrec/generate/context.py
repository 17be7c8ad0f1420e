"""A loaded model together with what the pipeline needs from the store, aligned with the
model's own index: item titles, categories and text vectors, and users' histories read
on demand. The CLI, batch generation and the service build lists through it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from directrec.data.dataset import IdMap
from directrec.data.histories import Histories
from directrec.data.store import StoreBase, open_store
from directrec.generate.pipeline import ItemInfo
from directrec.generate.stages import Stages
from directrec.models.base import Recommender


@dataclass
class ModelContext:
    """One model, ready to build lists: the CLI's and batch generation's, and the version
    the service serves (immutable once built: a swap replaces it as a whole)."""

    model: Recommender
    items: IdMap  # the model's item index → raw id
    users: IdMap  # the users the model was fit on (per-user models personalise only these)
    info: ItemInfo
    stages: Stages = dataclasses.field(default_factory=Stages)  # fitted after the model
    version: str = ""  # the registry version it came from (the service's label)

    @classmethod
    def build(
        cls,
        model: Recommender,
        db: str | Path | None,
        vectors: bool = False,
        stages: Stages | None = None,
        features: str | None = None,
    ) -> ModelContext:
        """Align the store's catalogue with the model's items (`vectors`: item vectors
        too, from the store's cache or computed, for MMR diversity: of `features`, by
        default those the model was fit on)."""
        items = model_items(model)
        users = IdMap(np.array(model.meta.get("user_ids", []), dtype=object))
        info = ItemInfo([""] * model.n_items, [[] for _ in range(model.n_items)])
        if db is not None:
            with open_store(db) as store:
                table = store.items()
            info = item_info(
                items,
                table["item_id"].astype(str).tolist(),
                table["title"].fillna("").astype(str).tolist(),
                table["categories"].tolist(),
            )
            if vectors:
                from directrec.text.features import of_model

                vecs = item_vectors(db, items, features or of_model(model))
                info = dataclasses.replace(info, vectors=vecs)
        return cls(model, items, users, info, stages or Stages())

    @classmethod
    def for_catalogue(
        cls,
        model: Recommender,
        ids: Sequence[str],
        titles: Sequence[str],
        categories: Sequence,
        vectors: np.ndarray | None = None,
        version: str = "",
        stages: Stages | None = None,
    ) -> ModelContext:
        """Align a catalogue held in memory (row r: `ids[r]`, `titles[r]`, `categories[r]`,
        `vectors[r]` text embeddings) with the model. A model that can take new items
        from their text (`cold_items`) is first given the catalogue items it lacks, so they
        can be recommended without retraining (the model object is changed)."""
        items = model_items(model)
        cold = [r for r, x in enumerate(ids) if items.index(x) < 0]
        if vectors is not None and cold and model.capabilities.cold_items:
            model.add_items(vectors[cold])
            items = IdMap(np.concatenate([items.ids, np.array([ids[r] for r in cold], object)]))
            model.meta["item_ids"] = items.ids.tolist()
        users = IdMap(np.array(model.meta.get("user_ids", []), dtype=object))
        info = item_info(items, ids, titles, categories, vectors)
        return cls(model, items, users, info, stages or Stages(), version)

    def histories(
        self,
        store: StoreBase,
        raw_users: Sequence[str],
        extra: Sequence[Sequence[str]] | None = None,
    ) -> Histories:
        """The users' stored histories (plus `extra` raw items each, e.g. feedback since)
        in the model's index; users keep their index in the model's user map or -1."""
        stored = store.histories(list(raw_users))
        seqs = [
            stored.get(str(u), []) + list(extra[n] if extra else [])
            for n, u in enumerate(raw_users)
        ]
        return Histories.from_raw(seqs, self.items, self.users.indices(list(raw_users)))

    def raw(self, items: np.ndarray) -> list[str]:
        return [str(self.items.ids[i]) for i in items]


def model_items(model: Recommender) -> IdMap:
    """The model's item index → raw id map (saved in its ids.json by `train`)."""
    items = IdMap(np.array(model.meta.get("item_ids", []), dtype=object))
    if len(items) != model.n_items:
        raise ValueError(
            f"the model carries no item id map for its {model.n_items} items "
            f"(ids.json lists {len(items)}; saved without `train`?)"
        )
    return items


def item_info(
    items: IdMap,
    ids: Sequence[str],
    titles: Sequence[str],
    categories: Sequence,
    vectors: np.ndarray | None = None,
) -> ItemInfo:
    """A catalogue (row r: `ids[r]`, `titles[r]`, `categories[r]`, `vectors[r]`) aligned
    with a model's item index: items the catalogue lacks get no title, no categories and
    a zero vector; catalogue rows the model lacks are left out."""
    n = len(items)
    pos = items.indices(list(ids))
    rows = np.flatnonzero(pos >= 0)
    out_titles, out_cats = [""] * n, [[] for _ in range(n)]
    for r in rows:
        out_titles[pos[r]] = titles[r]
        out_cats[pos[r]] = list(categories[r]) if categories[r] is not None else []
    vecs = None
    if vectors is not None:
        vecs = np.zeros((n, vectors.shape[1]), dtype=np.float32)
        vecs[pos[rows]] = vectors[rows]
    return ItemInfo(out_titles, out_cats, vecs)


def item_vectors(db: str | Path, items: IdMap, features: str = "text") -> np.ndarray | None:
    """Item vectors of `features` (text, image, both) aligned with `items` (zero rows for
    items the store lacks); None when the catalogue has nothing of that kind."""
    from directrec.data.dataset import Dataset
    from directrec.text.features import item_features

    ds = Dataset.from_store(db, include_catalog_items=True)
    vec = item_features(ds, db, features)
    if vec is None:
        return None
    pos = ds.items.indices([str(x) for x in items.ids])
    return np.where((pos >= 0)[:, None], vec[np.maximum(pos, 0)], 0.0).astype(np.float32)
