"""BPR-MF (Rendle et al. 2009): pairwise ranking loss, trained by the `implicit` library."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from directrec.data.dataset import Catalog, Interactions
from directrec.models.base import Recommender


class BPR(Recommender):
    name = "bpr"

    @dataclasses.dataclass
    class Config:
        factors: int = 64
        # Chosen on ML-1M leave-one-out *validation* (bench/tune.py), never on test.
        learning_rate: float = 0.01
        regularization: float = 0.001
        iterations: int = 100
        seed: int = 42

    def _fit(self, data: Interactions, catalog: Catalog | None) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        model = BayesianPersonalizedRanking(
            factors=c.factors,
            learning_rate=c.learning_rate,
            regularization=c.regularization,
            iterations=c.iterations,
            random_state=c.seed,
        )
        with threadpool_limits(1, "blas"):
            model.fit(self.seen, show_progress=False)
        # implicit appends an item-bias column (and a constant 1 to users).
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)

    def score(self, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.user_factors[users]) @ torch.from_numpy(self.item_factors).T

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors, self.item_factors = state["user_factors"], state["item_factors"]
