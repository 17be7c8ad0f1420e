"""A model's answer to "which items for these rows": each row's best items with their
scores, best first (`Candidates`), rather than a score for every item of the catalogue.

A generator writes a few items per row (its beam) and has nothing to say of the rest, so
its candidates are exactly what it wrote. A model that scores every item gives its top `k`
(`Candidates.from_scores`). Evaluation asks for its targets to be `keep`t in the list with
their scores wherever they rank: a target's rank among the candidates (the number scored
strictly higher) is then its rank over the whole catalogue whenever that is below `k`, and
at least `k` otherwise, which is all a metric at a cut-off ≤ k reads (ties count in the
target's favour, as evaluate/metrics.py defines).
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
    def from_scores(
        cls, scores: torch.Tensor, k: int, keep: torch.Tensor | None = None
    ) -> Candidates:
        """The top `k` of dense `scores` [B, n_items] (-inf: not a candidate), and the
        items of `keep` [B, T] (-1: none) with their scores wherever they rank, after the
        top `k` items they tie with."""
        kk = max(0, min(k, scores.shape[1]))
        top = torch.topk(scores, kk, dim=1) if kk else None
        items = top.indices if top is not None else torch.zeros(len(scores), 0, dtype=torch.long)
        vals = top.values if top is not None else torch.zeros(len(scores), 0)
        if keep is not None and keep.numel():
            kept = keep.to(torch.long)
            listed = (kept[:, :, None] == items[:, None, :]).any(-1)
            kept = torch.where(listed, -1, kept)
            items = torch.cat([items, kept], 1)
            vals = torch.cat([vals, scores.gather(1, kept.clamp(min=0))], 1)
        return cls.of(items, vals)

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
