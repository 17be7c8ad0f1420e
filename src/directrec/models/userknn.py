"""UserKNN: the k most similar training users vote for their items.

Similarity is cosine with shrinkage, or Pearson correlation over full interaction vectors
(binary for implicit data). Neighbours are found at scoring time in user batches, so memory
stays at batch × n_users.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch

from directrec.data.dataset import Catalog, Interactions
from directrec.models.base import Recommender


class UserKNN(Recommender):
    name = "userknn"
    supports_histories = False  # neighbours are the stored users' histories

    @dataclasses.dataclass
    class Config:
        neighbours: int = 50
        shrink: float = 10.0
        similarity: str = "cosine"  # or "pearson"
        seed: int = 42

    def _fit(self, data: Interactions, catalog: Catalog | None) -> None:
        if self.config.similarity not in ("cosine", "pearson"):
            raise ValueError("similarity must be 'cosine' or 'pearson'")

    def _on_history(self, data: Interactions | None = None) -> None:
        """Neighbours come from the current histories: cache their norms."""
        x = self.seen
        self._sum = np.asarray(x.sum(1)).ravel()
        self._sq = np.asarray(x.multiply(x).sum(1)).ravel()
        self._xt = x.T.tocsr()

    def score(self, users: np.ndarray) -> torch.Tensor:
        x, n = self.seen, self.n_items
        dots = torch.from_numpy((x[users] @ self._xt).toarray())  # [B, U]
        s_all, q_all = torch.from_numpy(self._sum), torch.from_numpy(self._sq)
        s_b, q_b = s_all[users][:, None], q_all[users][:, None]
        if self.config.similarity == "cosine":
            sims = dots / (torch.sqrt(q_b * q_all[None]) + self.config.shrink)
        else:
            cov = dots - s_b * s_all[None] / n
            sd_b = torch.sqrt((q_b - s_b**2 / n).clamp(min=0))
            sd_all = torch.sqrt((q_all - s_all**2 / n).clamp(min=0))
            sims = cov / (sd_b * sd_all[None] + self.config.shrink)
        sims[torch.arange(len(users)), torch.from_numpy(users)] = 0.0  # not one's own neighbour
        k = min(self.config.neighbours, self.n_users)
        top = torch.topk(sims, k, dim=1)
        rows = np.repeat(np.arange(len(users)), k)
        w = sp.csr_matrix(
            (top.values.clamp(min=0).reshape(-1).numpy(), (rows, top.indices.reshape(-1).numpy())),
            shape=(len(users), self.n_users),
        )
        return torch.from_numpy((w @ x).toarray().astype(np.float32))

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self._on_history()
