"""ItemKNN: item-item cosine similarity with shrinkage, k nearest neighbours per item.

score(u, i) = Σ_{j ∈ history(u) ∩ N_k(i)} sim(i, j), sim(i, j) = |U_i ∩ U_j| / (‖i‖‖j‖ + shrink).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models.artifacts import csr_from_state, csr_spec, csr_to_state
from directrec.models.base import Recommender, Validator
from directrec.models.settings import Checks, ModelConfig, setting


def top_k_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of each row of a CSR matrix."""
    m = m.tocsr()
    m.sort_indices()
    lengths = np.diff(m.indptr)
    if lengths.max(initial=0) <= k:
        return m
    rows, cols, vals = [], [], []
    for r in np.flatnonzero(lengths):
        s, e = m.indptr[r], m.indptr[r + 1]
        d = m.data[s:e]
        keep = np.argpartition(-d, k - 1)[:k] if e - s > k else np.arange(e - s)
        rows.append(np.full(len(keep), r))
        cols.append(m.indices[s:e][keep])
        vals.append(d[keep])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape
    )


class ItemKNN(Recommender):
    name = "itemknn"
    summary = "item-item cosine similarity with shrinkage, k nearest neighbours per item"

    @dataclasses.dataclass
    class Config(ModelConfig):
        neighbours: int = setting(100, "most similar items kept per item (k)")
        shrink: float = setting(
            10.0, "shrinkage added to the cosine's denominator: damps pairs seen together rarely"
        )

        def checks(self) -> Checks:
            return {
                "neighbours": (self.neighbours >= 1, ">= 1"),
                "shrink": (self.shrink >= 0, ">= 0"),
            }

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        x = data.matrix("binary")
        co = (x.T @ x).tocoo()
        norms = np.sqrt(np.asarray(x.sum(0)).ravel())
        vals = co.data / (norms[co.row] * norms[co.col] + self.config.shrink)
        off = co.row != co.col
        sim = sp.csr_matrix(
            (vals[off].astype(np.float32), (co.row[off], co.col[off])), shape=co.shape
        )
        # Row i holds item i's neighbours; transpose so that history @ S sums over them.
        self.sim = top_k_per_row(sim, self.config.neighbours).T.tocsr()

    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        return torch.from_numpy((histories.matrix() @ self.sim).toarray())

    def _state(self) -> dict[str, np.ndarray]:
        return csr_to_state("sim", self.sim)

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        n = self.n_items
        self._expect(state, csr_spec("sim", n))
        self.sim = csr_from_state("sim", state, (n, n))
