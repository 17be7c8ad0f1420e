"""Users' histories as one small type that training, evaluation, the CLI, batch generation
and the service all pass to models.

A model holds what it learned and nothing per user: to score, the caller hands it
`Histories`. Row r is one history, oldest first: `items[indptr[r]:indptr[r + 1]]`, and
`users[r]` is the user's index in the model's id map (-1 for an anonymous session or a user
the model has never seen). The one ordering rule (per user by time, ties in ingest order)
is applied where interactions are indexed (`Dataset.from_frames`, `Interactions.concat`);
everything here keeps that order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from directrec.data.dataset import IdMap, Interactions


@dataclass(frozen=True)
class Histories:
    """A batch of histories (see module doc). Immutable: methods return new batches."""

    indptr: np.ndarray  # int64 [B + 1]
    items: np.ndarray  # int64 [indptr[-1]], item indices, oldest first per row
    users: np.ndarray  # int64 [B], user index or -1
    n_items: int
    ratings: np.ndarray | None = None  # float32, aligned with items, if the data has them

    def __post_init__(self) -> None:
        if len(self.indptr) != len(self.users) + 1 or self.indptr[-1] != len(self.items):
            raise ValueError("histories: indptr, items and users do not line up")
        if len(self.items) and (self.items.min() < 0 or self.items.max() >= self.n_items):
            raise ValueError(f"history items must be indices in [0, {self.n_items})")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_interactions(
        cls, data: Interactions, users: np.ndarray | Sequence[int] | None = None
    ) -> Histories:
        """The histories of `users` (default: every user of `data`, row u = user u). A user
        index outside `data` gets an empty history and keeps its index."""
        indptr = data.indptr
        rows = np.arange(data.n_users) if users is None else np.asarray(users, dtype=np.int64)
        known = (rows >= 0) & (rows < data.n_users)
        safe = np.where(known, rows, 0)
        starts = np.where(known, indptr[safe], 0)
        lengths = np.where(known, indptr[safe + 1] - indptr[safe], 0)
        new_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        pos = _ranges(starts, lengths)
        ratings = None if data.rating is None else data.rating[pos].astype(np.float32)
        return cls(new_indptr, data.item[pos].astype(np.int64), rows, data.n_items, ratings)

    @classmethod
    def from_lists(
        cls,
        lists: Sequence[Sequence[int] | np.ndarray],
        n_items: int,
        users: Sequence[int] | np.ndarray | None = None,
    ) -> Histories:
        """Histories from item-index lists (oldest first); users default to -1 (anonymous)."""
        arrays = [np.asarray(h, dtype=np.int64).reshape(-1) for h in lists]
        indptr = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
        items = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        u = np.full(len(arrays), -1, np.int64) if users is None else np.asarray(users, np.int64)
        return cls(indptr, items, u, n_items)

    @classmethod
    def from_raw(
        cls,
        sequences: Sequence[Sequence[str]],
        items: IdMap,
        users: Sequence[int] | np.ndarray | None = None,
    ) -> Histories:
        """Histories from raw item ids (oldest first), indexed by `items` (a model's item
        map); ids the map does not know (items newer than the model) are dropped."""
        lists = [idx[idx >= 0] for idx in (items.indices(list(s)) for s in sequences)]
        return cls.from_lists(lists, len(items), users)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, r: int) -> np.ndarray:
        return self.items[self.indptr[r] : self.indptr[r + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def row_of_items(self) -> np.ndarray:
        """For every entry of `items`, the row it belongs to."""
        return np.repeat(np.arange(len(self)), self.lengths())

    def matrix(self, values: str = "binary") -> sp.csr_matrix:
        """Rows × items CSR: `binary` (repeats count once) or `rating` values (else 1)."""
        data = np.ones(len(self.items), dtype=np.float32)
        if values == "rating" and self.ratings is not None:
            data = self.ratings.astype(np.float32)
        m = sp.csr_matrix(
            (data, (self.row_of_items(), self.items)), shape=(len(self), self.n_items)
        )
        m.sum_duplicates()
        if values == "binary":
            m.data[:] = 1.0
        return m

    def windows(self, length: int) -> np.ndarray:
        """Each row's last `length` items as tokens (item + 1), left-padded with 0."""
        out = np.zeros((len(self), length), dtype=np.int64)
        row = self.row_of_items()
        pos_from_end = self.indptr[row + 1] - np.arange(len(self.items)) - 1
        keep = pos_from_end < length
        out[row[keep], length - 1 - pos_from_end[keep]] = self.items[keep] + 1
        return out

    def tiles(self, length: int) -> np.ndarray:
        """Each row's whole history as windows of `length` tokens (item + 1, left-padded
        with 0), tiled from the newest item back: consecutive windows share one item, so
        every item but a row's first is the next-item target of exactly one window. The
        newest window of each row comes first and equals `windows(length)`; the older ones
        follow in the order of their rows. A row of n items gives 1 + (n - 2) // (length - 1)
        windows (one for n ≤ 2)."""
        if length < 2:
            raise ValueError(f"tiles need length >= 2 (one input and one target), not {length}")
        lengths = self.lengths()
        extra = np.maximum(lengths - 2, 0) // (length - 1)  # older windows per row
        older = np.repeat(np.arange(len(self)), extra)
        k = 1 + _ranges(np.zeros(len(self), np.int64), extra)  # 1.. per row
        ends = np.concatenate([self.indptr[1:], self.indptr[1:][older] - k * (length - 1)])
        row = np.concatenate([np.arange(len(self)), older])
        starts = np.maximum(self.indptr[:-1][row], ends - length)
        sizes = ends - starts
        out = np.zeros((len(ends), length), dtype=np.int64)
        which = np.repeat(np.arange(len(ends)), sizes)
        col = _ranges(length - sizes, sizes)
        out[which, col] = self.items[_ranges(starts, sizes)] + 1
        return out

    def training_windows(self, length: int, which: str) -> np.ndarray:
        """What a sequence model trains on (its `windows` setting): `last` = each row's
        newest window (`windows`), `all` = its whole history tiled (`tiles`)."""
        if which not in ("last", "all"):
            raise ValueError(f"windows must be last or all, not {which!r}")
        return self.tiles(length) if which == "all" else self.windows(length)

    # ------------------------------------------------------------------ new batches
    def take(self, rows: np.ndarray | Sequence[int]) -> Histories:
        """The rows `rows` (an index array or a boolean mask), in that order."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        starts, lengths = self.indptr[rows], self.lengths()[rows]
        pos = _ranges(starts, lengths)
        return Histories(
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            self.items[pos],
            self.users[rows],
            self.n_items,
            None if self.ratings is None else self.ratings[pos],
        )

    def last(self, n: int | None) -> Histories:
        """Keep each row's `n` most recent items (a context cap)."""
        if not n or (len(self) and self.lengths().max() <= n):
            return self
        lengths = np.minimum(self.lengths(), n)
        starts = self.indptr[1:] - lengths
        pos = _ranges(starts, lengths)
        return Histories(
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            self.items[pos],
            self.users,
            self.n_items,
            None if self.ratings is None else self.ratings[pos],
        )

    def append(self, extra: Histories) -> Histories:
        """Row r followed by extra's row r (e.g. stored history + feedback since)."""
        if len(extra) != len(self):
            raise ValueError("append: both batches need the same number of rows")
        lengths = self.lengths() + extra.lengths()
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.empty(indptr[-1], dtype=np.int64)
        mine = _ranges(indptr[:-1], self.lengths())
        theirs = _ranges(indptr[:-1] + self.lengths(), extra.lengths())
        items[mine], items[theirs] = self.items, extra.items
        return Histories(indptr, items, self.users, max(self.n_items, extra.n_items))

    def without(self, row: int, position: int) -> np.ndarray:
        """Row `row` with the item at `position` removed (for leave-one-out influence)."""
        h = self[row]
        return np.concatenate([h[:position], h[position + 1 :]])

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, Histories]]:
        """(row indices, sub-batch) in consecutive slices of at most `size` rows."""
        for b in range(0, len(self), size):
            rows = np.arange(b, min(b + size, len(self)))
            yield rows, self.take(rows)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n), vectorised."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.repeat(np.asarray(starts, np.int64) - offsets, lengths) + np.arange(total)
