"""Indexed interactions: contiguous user/item indices, time-ordered per user.

`Interactions` is what models fit on and what splits cut. Raw ids stay available through
`IdMap` so every index can be turned back into the user's own id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from directrec.data.preprocess import chronological_order


def _natural_sort(ids: np.ndarray) -> np.ndarray:
    """Numeric ids sort as numbers ('2' before '10'); anything else sorts as text."""
    ids = np.asarray(ids, dtype=object)
    try:
        as_int = np.array([int(x) for x in ids])
        if all(str(v) == x for v, x in zip(as_int, ids, strict=False)):
            return ids[np.argsort(as_int, kind="stable")]
    except ValueError:
        pass
    return np.sort(ids.astype(str)).astype(object)


@dataclass
class IdMap:
    """Raw id ↔ contiguous index, both ways."""

    ids: np.ndarray  # index → raw id (object array of str)
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=object)
        self._index = {str(x): i for i, x in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, raw: str) -> int:
        """Index of `raw`, or -1 if unknown."""
        return self._index.get(str(raw), -1)

    def indices(self, raws: list[str] | np.ndarray) -> np.ndarray:
        return np.array([self._index.get(str(r), -1) for r in raws], dtype=np.int64)


@dataclass
class Catalog:
    """Item metadata aligned with the item index (row i describes item i)."""

    titles: list[str]
    texts: list[str]
    categories: list[list[str]]
    embeddings: np.ndarray | None = None  # [n_items, d], L2-normalised, if computed
    images: list[str] | None = None  # absolute image paths ("" : no image); None: none at all
    features: str = "text"  # what `embeddings` hold: text | image | both (item_features)

    @property
    def has_text(self) -> bool:
        return any(t for t in self.titles) or any(t for t in self.texts)

    @property
    def has_images(self) -> bool:
        return bool(self.images) and any(self.images)

    def has_features(self, features: str = "text") -> bool:
        """Has the catalogue what item features `features` ("text", "image", "both") read?"""
        if features == "text":
            return self.has_text
        if features == "image":
            return self.has_images
        return self.has_text or self.has_images

    def document(self, i: int) -> str:
        """The text the encoder sees for item i: title, categories, then free text."""
        parts = [self.titles[i], ", ".join(self.categories[i]), self.texts[i]]
        return ". ".join(p for p in parts if p)

    def category_matrix(self) -> sp.csr_matrix:
        """Multi-hot item × category matrix (for diversity when there is no text)."""
        vocab: dict[str, int] = {}
        rows, cols = [], []
        for i, cats in enumerate(self.categories):
            for c in cats:
                rows.append(i)
                cols.append(vocab.setdefault(c, len(vocab)))
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(self.categories), len(vocab)))


@dataclass
class Interactions:
    """Interactions as index arrays sorted by user, then chronologically (ties: ingest order)."""

    user: np.ndarray  # int64 [n]
    item: np.ndarray  # int64 [n]
    n_users: int
    n_items: int
    rating: np.ndarray | None = None  # float32 [n]
    timestamp: np.ndarray | None = None  # int64 [n], if the data has times

    def __len__(self) -> int:
        return len(self.user)

    @property
    def indptr(self) -> np.ndarray:
        """Offsets: user u's interactions are rows indptr[u]:indptr[u+1]."""
        return np.concatenate([[0], np.cumsum(np.bincount(self.user, minlength=self.n_users))])

    def history_lengths(self) -> np.ndarray:
        return np.bincount(self.user, minlength=self.n_users)

    def matrix(self, values: str = "binary") -> sp.csr_matrix:
        """User × item CSR; `binary` (repeats collapse to 1) or `rating` values."""
        if values == "rating" and self.rating is not None:
            data = self.rating.astype(np.float32)
        else:
            data = np.ones(len(self), dtype=np.float32)
        m = sp.csr_matrix((data, (self.user, self.item)), shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        if values == "binary":
            m.data[:] = 1.0
        return m

    def sequences(self) -> list[np.ndarray]:
        """Each user's item indices, oldest first."""
        return np.split(self.item, self.indptr[1:-1])

    def select(self, mask: np.ndarray) -> Interactions:
        """The rows where `mask` is true (order kept)."""
        return replace(
            self,
            user=self.user[mask],
            item=self.item[mask],
            rating=None if self.rating is None else self.rating[mask],
            timestamp=None if self.timestamp is None else self.timestamp[mask],
        )

    def last_n(self, n: int | None) -> Interactions:
        """Keep each user's `n` most recent interactions (a history cap)."""
        if not n:
            return self
        pos_from_end = self.indptr[self.user + 1] - np.arange(len(self)) - 1
        return self.select(pos_from_end < n)

    @staticmethod
    def concat(a: Interactions, b: Interactions) -> Interactions:
        """Union of two sets over the same index, re-sorted per user, a's rows first on ties."""
        user = np.concatenate([a.user, b.user])
        order_key = np.concatenate([np.arange(len(a)), np.arange(len(b)) + len(a)])
        if a.timestamp is not None and b.timestamp is not None:
            ts = np.concatenate([a.timestamp, b.timestamp])
            order = np.lexsort((order_key, ts, user))
        else:
            ts, order = None, np.lexsort((order_key, user))
        rating = (
            None
            if a.rating is None or b.rating is None
            else np.concatenate([a.rating, b.rating])[order]
        )
        return Interactions(
            user=user[order],
            item=np.concatenate([a.item, b.item])[order],
            n_users=a.n_users,
            n_items=a.n_items,
            rating=rating,
            timestamp=None if ts is None else ts[order],
        )

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for arr in (self.user, self.item):
            h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


@dataclass
class Dataset:
    """Everything a model or an evaluation needs from a store, indexed."""

    interactions: Interactions
    users: IdMap
    items: IdMap
    catalog: Catalog
    fingerprint: str = ""
    name: str = ""

    @classmethod
    def from_frames(
        cls,
        inter: pd.DataFrame,
        items: pd.DataFrame | None = None,
        *,
        include_catalog_items: bool = False,
        fingerprint: str = "",
        name: str = "",
    ) -> Dataset:
        """Index raw frames. Items are those that occur in interactions (plus, with
        `include_catalog_items`, catalogue items never interacted with: cold items)."""
        order = chronological_order(inter)
        inter = inter.iloc[order]
        user_ids = _natural_sort(inter["user_id"].astype(str).unique())
        item_pool = inter["item_id"].astype(str).unique()
        if include_catalog_items and items is not None and len(items):
            item_pool = np.union1d(item_pool.astype(str), items["item_id"].astype(str))
        item_ids = _natural_sort(item_pool)
        users, itemmap = IdMap(user_ids), IdMap(item_ids)
        u = pd.Index(user_ids).get_indexer(inter["user_id"].astype(str)).astype(np.int64)
        i = pd.Index(item_ids).get_indexer(inter["item_id"].astype(str)).astype(np.int64)
        by_user = np.argsort(u, kind="stable")  # keeps chronological order within a user
        rating = inter["rating"].to_numpy(dtype="float64", na_value=np.nan)
        ts = inter["timestamp"].to_numpy(dtype="float64", na_value=np.nan)
        data = Interactions(
            user=u[by_user],
            item=i[by_user],
            n_users=len(users),
            n_items=len(itemmap),
            rating=None if np.isnan(rating).all() else rating[by_user].astype(np.float32),
            timestamp=None if np.isnan(ts).any() else ts[by_user].astype(np.int64),
        )
        catalog = catalog_for(items, item_ids)
        return cls(data, users, itemmap, catalog, fingerprint or data.fingerprint(), name)

    @classmethod
    def from_store(cls, db: str | Path, include_catalog_items: bool = False) -> Dataset:
        from directrec.data.store import open_store, store_name

        with open_store(db) as store:
            inter, items, meta = store.interactions(), store.items(), store.meta()
        return cls.from_frames(
            inter,
            items,
            include_catalog_items=include_catalog_items,
            fingerprint=meta.get("fingerprint", ""),
            name=store_name(db),
        )


def catalog_for(items: pd.DataFrame | None, item_ids: np.ndarray) -> Catalog:
    n = len(item_ids)
    if items is None or items.empty:
        return Catalog([""] * n, [""] * n, [[] for _ in range(n)])
    table = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id")
    table = table.set_index("item_id").reindex(item_ids.astype(str))
    images = table["image"].fillna("").astype(str).tolist() if "image" in table else None
    return Catalog(
        images=images if images and any(images) else None,
        titles=table["title"].fillna("").astype(str).tolist(),
        texts=table["text"].fillna("").astype(str).tolist(),
        categories=[
            list(c) if isinstance(c, list | np.ndarray) else [] for c in table["categories"]
        ],
    )
