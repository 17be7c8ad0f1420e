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
    """Koren's objective per rating (u, i): (r_ui - r̂_ui)² + λ(b_u² + b_i² + ‖p_u‖² + ‖q_i‖²
    + Σ_{j∈N(u)} ‖y_j‖²). The last term is what keeps the y_j small: every rating of u
    shrinks all of u's y_j, as SGD per rating (Koren; Surprise) does. Penalising y only
    as a whole, once a batch, leaves them nearly free and the model overfits."""

    def __init__(self, seen: sp.csr_matrix, factors: int, mean: float) -> None:
        super().__init__()
        n_users, n_items = seen.shape
        self.register_buffer("mu", torch.tensor(mean))
        self.seen = seen  # binary: N(u), the items each user rated in training
        counts = np.maximum(np.diff(seen.indptr), 1).astype(np.float32)
        self.norm = torch.from_numpy(counts**-0.5)  # |N(u)|^-½
        self.bu, self.bi = nn.Embedding(n_users, 1), nn.Embedding(n_items, 1)
        self.p, self.q = nn.Embedding(n_users, factors), nn.Embedding(n_items, factors)
        self.y = nn.Embedding(n_items, factors)
        for e in (self.bu, self.bi):
            nn.init.zeros_(e.weight)
        for e in (self.p, self.q, self.y):
            nn.init.normal_(e.weight, std=0.05)

    def sums(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each of `users`: |N(u)|^-½ Σ_{j∈N(u)} y_j and Σ_{j∈N(u)} ‖y_j‖² (one sparse
        product gives both)."""
        y = self.y.weight
        both = torch_csr(self.seen[users.numpy()]) @ torch.cat([y, (y**2).sum(1, True)], 1)
        return both[:, :-1] * self.norm[users, None], both[:, -1]

    def implicit_term(self, users: torch.Tensor) -> torch.Tensor:
        """|N(u)|^-½ Σ_{j∈N(u)} y_j for each of `users`."""
        return self.sums(users)[0]

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        users, inverse = torch.unique(u, return_inverse=True)
        implicit, y_sq = self.sums(users)
        pu, qi = self.p(u), self.q(i)
        bu, bi = self.bu(u).squeeze(1), self.bi(i).squeeze(1)
        pred = self.mu + bu + bi + ((pu + implicit[inverse]) * qi).sum(1)
        penalty = (pu**2).sum(1) + (qi**2).sum(1) + bu**2 + bi**2 + y_sq[inverse]
        return pred, penalty.mean()

    @torch.no_grad()
    def fold(self) -> BiasedMFNet:
        """The same predictions for the users it was fit on, as a biased MF: each p_u
        absorbs its implicit term."""
        n_users, factors = self.p.weight.shape
        folded = BiasedMFNet(n_users, len(self.q.weight), factors, float(self.mu))
        folded.p.weight.copy_(self.p.weight + self.implicit_term(torch.arange(n_users)))
        for name in ("q", "bu", "bi"):
            getattr(folded, name).weight.copy_(getattr(self, name).weight)
        return folded.eval()


class SVDpp(RatingModel):
    name = "svdpp"
    summary = "SVD++: biased MF plus implicit feedback from the rated items (ratings)"

    def build(self, seen: sp.csr_matrix | None) -> nn.Module:
        n_users, n_items, f = self.n_users, self.n_items, self.config.factors
        if seen is None:  # loading: the folded form
            return BiasedMFNet(n_users, n_items, f, self.global_mean)
        return SVDppNet(seen.astype(np.float32), f, self.global_mean)

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        super()._fit(data, catalog, validator)
        self.net = self.net.fold()
