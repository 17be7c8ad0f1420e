"""NMF for ratings (Luo et al. 2014, as in Surprise): r̂_ui = p_u·q_i with non-negative
factors, kept non-negative by projecting after every optimiser step."""

from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import nn

from directrec.models.rating import RatingModel


class NMFNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, factors: int, mean: float) -> None:
        super().__init__()
        self.p, self.q = nn.Embedding(n_users, factors), nn.Embedding(n_items, factors)
        scale = (mean / factors) ** 0.5  # start near the mean rating
        for e in (self.p, self.q):
            nn.init.uniform_(e.weight, 0.5 * scale, 1.5 * scale)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pu, qi = self.p(u), self.q(i)
        return (pu * qi).sum(1), ((pu**2).sum(1) + (qi**2).sum(1)).mean()


class NMF(RatingModel):
    name = "nmf"
    summary = "non-negative matrix factorisation for explicit ratings"

    def build(self, seen: sp.csr_matrix | None) -> nn.Module:
        return NMFNet(self.n_users, self.n_items, self.config.factors, self.global_mean)

    @torch.no_grad()
    def after_step(self) -> None:
        self.net.p.weight.clamp_(min=0)
        self.net.q.weight.clamp_(min=0)
