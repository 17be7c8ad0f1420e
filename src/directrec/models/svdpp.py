"""SVD++ (Koren, KDD 2008): biased MF whose user factor also sums the factors y_j of every
item the user rated: r̂_ui = μ + b_u + b_i + q_i·(p_u + |N(u)|^-½ Σ_{j∈N(u)} y_j).

After training, each user's implicit term is folded into their factor (exact for the
users the model was fit on), so the saved model is a biased MF and keeps no user's item
set."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from directrec.data.dataset import Catalog, Interactions
from directrec.models.base import Validator, torch_csr
from directrec.models.biasedmf import BiasedMFNet
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

    def implicit_term(self, users: torch.Tensor) -> torch.Tensor:
        """|N(u)|^-½ Σ_{j∈N(u)} y_j for each of `users`."""
        return torch_csr(self.implicit[users.numpy()]) @ self.y.weight

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        users, inverse = torch.unique(u, return_inverse=True)
        implicit = self.implicit_term(users)[inverse]
        pu, qi = self.p(u) + implicit, self.q(i)
        bu, bi = self.bu(u).squeeze(1), self.bi(i).squeeze(1)
        pred = self.mu + bu + bi + (pu * qi).sum(1)
        penalty = ((self.p(u) ** 2).sum(1) + (qi**2).sum(1) + bu**2 + bi**2).mean()
        return pred, penalty + (self.y.weight**2).sum() / max(len(self.y.weight), 1)


class SVDpp(RatingModel):
    name = "svdpp"
    summary = "SVD++: biased MF plus implicit feedback from the rated items (ratings)"

    def build(self, seen: sp.csr_matrix | None) -> nn.Module:
        n_users, n_items, f = self.n_users, self.n_items, self.config.factors
        if seen is None:  # loading: the folded form
            return BiasedMFNet(n_users, n_items, f, self.global_mean)
        x = seen.astype(np.float32)
        norm = 1.0 / np.sqrt(np.maximum(np.diff(x.indptr), 1))
        return SVDppNet((sp.diags(norm.astype(np.float32)) @ x).tocsr(), f, self.global_mean)

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        super()._fit(data, catalog, validator)
        trained: SVDppNet = self.net
        folded = BiasedMFNet(self.n_users, self.n_items, self.config.factors, self.global_mean)
        with torch.no_grad():
            p = trained.p.weight + trained.implicit_term(torch.arange(self.n_users))
            folded.p.weight.copy_(p)
            for name in ("q", "bu", "bi"):
                getattr(folded, name).weight.copy_(getattr(trained, name).weight)
        self.net = folded.eval()
