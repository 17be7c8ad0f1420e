"""A model's answer to "which items for these rows": each row's best items with their
scores, best first (`Candidates`), rather than a score for every item of the catalogue.

A generator writes a few items per row (its beam) and has nothing to say of the rest, so
its candidates are exactly what it wrote. A model that scores every item gives its top `k`
(`Candidates.from_scores`); with `ties`, also every item tied with the k-th, so that the
rank of any item in the list is the number of items of the catalogue scored strictly
higher (the convention evaluate/metrics.py counts ties by).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass(frozen=True)
class Candidates:
    """items [B, m] (int64, -1 pads a row with fewer items) and scores [B, m] (float32,
    -inf on pads), each row sorted best first. CPU tensors."""

    items: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return self.items.shape[0]

    @property
    def width(self) -> int:
        return self.items.shape[1]

    @classmethod
    def of(cls, items: torch.Tensor, scores: torch.Tensor) -> Candidates:
        """Rows in any order, with -1 or -inf marking what is not an item: sorted best
        first (stable, so equal scores keep their order), pads moved to the end."""
        items = torch.as_tensor(items, dtype=torch.long).cpu()
        scores = torch.as_tensor(scores, dtype=torch.float32).cpu()
        bad = (items < 0) | ~torch.isfinite(scores)
        scores = torch.where(bad, -torch.inf, scores)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        items = torch.where(bad, -1, items).gather(1, order)
        return cls(items, scores.gather(1, order))

    @classmethod
    def from_scores(cls, scores: torch.Tensor, k: int, ties: bool = False) -> Candidates:
        """The top `k` of dense `scores` [B, n_items] (-inf: not a candidate). `ties`: rows
        whose k-th score is shared by items past the k-th keep those items too."""
        kk = max(0, min(k, scores.shape[1]))
        if kk == 0:
            return cls.empty(len(scores))
        top = torch.topk(scores, kk, dim=1)
        if ties:
            kth = top.values[:, -1:]
            extra = (scores == kth).sum(1) - (top.values == kth).sum(1)
            extra = torch.where(torch.isfinite(kth[:, 0]), extra, 0)
            wide = min(kk + int(extra.max()), scores.shape[1])
            if wide > kk:
                top = torch.topk(scores, wide, dim=1)
                past = torch.arange(wide) >= kk
                keep = ~past | (top.values == kth)
                return cls.of(
                    torch.where(keep, top.indices, -1), torch.where(keep, top.values, -torch.inf)
                )
        return cls.of(top.indices, top.values)

    @classmethod
    def empty(cls, rows: int) -> Candidates:
        return cls(torch.full((rows, 0), -1, dtype=torch.long), torch.zeros(rows, 0))

    @classmethod
    def stack(cls, parts: Sequence[tuple[np.ndarray, Candidates]], rows: int) -> Candidates:
        """One set of candidates for `rows` rows from parts holding some of them (each
        with its row indices), padded to the widest part."""
        width = max((c.width for _, c in parts), default=0)
        items = torch.full((rows, width), -1, dtype=torch.long)
        scores = torch.full((rows, width), -torch.inf)
        for where, c in parts:
            r = torch.from_numpy(np.asarray(where, dtype=np.int64))
            items[r, : c.width] = c.items
            scores[r, : c.width] = c.scores
        return cls(items, scores)

    def head(self, k: int) -> Candidates:
        """Each row's best `k`."""
        return Candidates(self.items[:, :k], self.scores[:, :k])

    def without(self, items: sp.csr_matrix | None) -> Candidates:
        """These candidates less row r's stored items of `items` [B, n_items]; the rest
        move up in their order."""
        if items is None or not items.nnz:
            return self
        items = items.tocsr()
        rows = np.repeat(np.arange(items.shape[0]), np.diff(items.indptr))
        key = lambda r, i: r * (items.shape[1] + 1) + i  # noqa: E731
        banned = torch.from_numpy(np.unique(key(rows, items.indices.astype(np.int64))))
        mine = key(torch.arange(len(self))[:, None], self.items.clamp(min=0))
        hit = torch.isin(mine, banned) & (self.items >= 0)
        return Candidates.of(torch.where(hit, -1, self.items), self.scores)

    def dense(self, n_items: int) -> torch.Tensor:
        """Scores [B, n_items]: each candidate's score, -inf for every other item."""
        out = torch.full((len(self), n_items), -torch.inf)
        ok = self.items >= 0
        rows = torch.arange(len(self))[:, None].expand_as(self.items)
        out[rows[ok], self.items[ok]] = self.scores[ok]
        return out


def mask_rows(scores: torch.Tensor, items: sp.csr_matrix | None) -> None:
    """Set scores[r, i] = -inf for every stored (r, i) of `items` [B, n_items], in place."""
    if items is None or not items.nnz:
        return
    items = items.tocsr()
    r = np.repeat(np.arange(items.shape[0]), np.diff(items.indptr))
    ok = items.indices < scores.shape[1]
    scores[
        torch.from_numpy(r[ok]), torch.from_numpy(items.indices[ok].astype(np.int64))
    ] = -torch.inf
