"""SVD++ (Koren, KDD 2008): biased MF whose user factor also sums the factors y_j of every
item the user rated: r̂_ui = μ + b_u + b_i + q_i·(p_u + |N(u)|^-½ Σ_{j∈N(u)} y_j)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from directrec.models.base import torch_csr
from directrec.models.rating import RatingModel


class SVDppNet(nn.Module):
    def __init__(self, implicit: sp.csr_matrix, factors: int, mean: float) -> None:
        super().__init__()
        n_users, n_items = implicit.shape
        self.register_buffer("mu", torch.tensor(mean))
        self.implicit = implicit  # rows normalised by |N(u)|^-½
        self.bu, self.bi = nn.Embedding(n_users, 1), nn.Embedding(n_items, 1)
        self.p, self.q = nn.Embedding(n_users, factors), nn.Embedding(n_items, factors)
        self.y = nn.Embedding(n_items, factors)
        for e in (self.bu, self.bi):
            nn.init.zeros_(e.weight)
        for e in (self.p, self.q, self.y):
            nn.init.normal_(e.weight, std=0.05)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        users, inverse = torch.unique(u, return_inverse=True)
        rows = torch_csr(self.implicit[users.numpy()])
        implicit = (rows @ self.y.weight)[inverse]  # Σ y_j / √|N(u)| per batch user
        pu, qi = self.p(u) + implicit, self.q(i)
        bu, bi = self.bu(u).squeeze(1), self.bi(i).squeeze(1)
        pred = self.mu + bu + bi + (pu * qi).sum(1)
        penalty = ((self.p(u) ** 2).sum(1) + (qi**2).sum(1) + bu**2 + bi**2).mean()
        return pred, penalty + (self.y.weight**2).sum() / max(len(self.y.weight), 1)


class SVDpp(RatingModel):
    name = "svdpp"

    def _implicit(self) -> sp.csr_matrix:
        x = self.seen.astype(np.float32)
        norm = 1.0 / np.sqrt(np.maximum(np.diff(x.indptr), 1))
        return sp.diags(norm.astype(np.float32)) @ x

    def build(self) -> nn.Module:
        return SVDppNet(self._implicit().tocsr(), self.config.factors, self.global_mean)
