"""UserKNN: the k most similar training users vote for their items.

Similarity is cosine with shrinkage, or Pearson correlation over full interaction vectors
(binary for implicit data). What the model learns is its neighbour pool: the training
users' item vectors. Any history can be scored against that pool (a stored user is not
their own neighbour); neighbours are found in batches, so memory stays at batch × users.
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


class UserKNN(Recommender):
    name = "userknn"
    summary = "the k most similar training users vote for their items"

    @dataclasses.dataclass
    class Config(ModelConfig):
        neighbours: int = setting(50, "most similar training users that vote (k)")
        shrink: float = setting(10.0, "shrinkage added to the similarity's denominator")
        similarity: str = setting("cosine", "cosine | pearson")

        def checks(self) -> Checks:
            return {
                "neighbours": (self.neighbours >= 1, ">= 1"),
                "shrink": (self.shrink >= 0, ">= 0"),
                "similarity": (self.similarity in ("cosine", "pearson"), "cosine or pearson"),
            }

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        self._set_pool(data.matrix("binary"))

    def _set_pool(self, pool: sp.csr_matrix) -> None:
        self.pool = pool.tocsr()
        self._pool_t = self.pool.T.tocsr()
        self._sum = torch.from_numpy(np.asarray(self.pool.sum(1)).ravel().astype(np.float64))
        self._sq = self._sum.clone()  # binary vectors: Σx² = Σx

    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        x, n = histories.matrix(), self.n_items
        dots = torch.from_numpy((x @ self._pool_t).toarray().astype(np.float64))  # [B, U]
        s_b = torch.from_numpy(np.asarray(x.sum(1)).astype(np.float64))  # [B, 1]
        s_all, q_all = self._sum[None], self._sq[None]
        if self.config.similarity == "cosine":
            sims = dots / (torch.sqrt(s_b * q_all) + self.config.shrink)
        else:
            cov = dots - s_b * s_all / n
            sd_b = torch.sqrt((s_b - s_b**2 / n).clamp(min=0))
            sd_all = torch.sqrt((q_all - s_all**2 / n).clamp(min=0))
            sims = cov / (sd_b * sd_all + self.config.shrink)
        own = (histories.users >= 0) & (histories.users < self.pool.shape[0])
        rows = np.flatnonzero(own)
        sims[torch.from_numpy(rows), torch.from_numpy(histories.users[rows])] = 0.0  # not oneself
        kk = min(self.config.neighbours, self.pool.shape[0])
        top = torch.topk(sims, kk, dim=1)
        w = sp.csr_matrix(
            (
                top.values.clamp(min=0).reshape(-1).numpy(),
                (np.repeat(np.arange(len(histories)), kk), top.indices.reshape(-1).numpy()),
            ),
            shape=(len(histories), self.pool.shape[0]),
        )
        return torch.from_numpy((w @ self.pool).toarray().astype(np.float32))

    def _state(self) -> dict[str, np.ndarray]:
        return csr_to_state("pool", self.pool)

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self._expect(state, csr_spec("pool", None))  # rows: the users it pools
        self._set_pool(csr_from_state("pool", state, (None, self.n_items)))
