"""Biased matrix factorisation ("SVD" in the Netflix-prize sense, Koren 2009):
r̂_ui = μ + b_u + b_i + p_u·q_i."""

from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import nn

from directrec.models.rating import RatingModel


class BiasedMFNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, factors: int, mean: float) -> None:
        super().__init__()
        self.register_buffer("mu", torch.tensor(mean))
        self.bu, self.bi = nn.Embedding(n_users, 1), nn.Embedding(n_items, 1)
        self.p, self.q = nn.Embedding(n_users, factors), nn.Embedding(n_items, factors)
        for e in (self.bu, self.bi):
            nn.init.zeros_(e.weight)
        for e in (self.p, self.q):
            nn.init.normal_(e.weight, std=0.05)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pu, qi, bu, bi = self.p(u), self.q(i), self.bu(u).squeeze(1), self.bi(i).squeeze(1)
        pred = self.mu + bu + bi + (pu * qi).sum(1)
        penalty = ((pu**2).sum(1) + (qi**2).sum(1) + bu**2 + bi**2).mean()
        return pred, penalty


class BiasedMF(RatingModel):
    name = "biasedmf"
    summary = "biased matrix factorisation for explicit ratings (Koren 2009)"

    def build(self, seen: sp.csr_matrix | None) -> nn.Module:
        return BiasedMFNet(self.n_users, self.n_items, self.config.factors, self.global_mean)
