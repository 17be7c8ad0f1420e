"""What latent-factor models share: scores are user factors · item factors, and the
factors are the learned state. ALS and BPR (both trained by `implicit`) build on it."""

from __future__ import annotations

import numpy as np
import torch

from directrec.models.base import Recommender


class FactorModel(Recommender):
    supports_histories = False  # a new history needs new user factors: retrain or fold in
    user_factors: np.ndarray
    item_factors: np.ndarray

    def score(self, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.user_factors[users]) @ torch.from_numpy(self.item_factors).T

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors, self.item_factors = state["user_factors"], state["item_factors"]
