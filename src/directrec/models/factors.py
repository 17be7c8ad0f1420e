"""What latent-factor models share: scores are user factors · item factors, and the
factors are the learned state. ALS and BPR (both trained by `implicit`) build on it.
A user's factors exist only for users the model was fit on: others get the popularity
fallback until the next `update` refits them."""

from __future__ import annotations

import numpy as np
import torch

from directrec.data.histories import Histories
from directrec.models.base import Capabilities, Recommender


class FactorModel(Recommender):
    capabilities = Capabilities(personalises="user")
    user_factors: np.ndarray
    item_factors: np.ndarray

    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        users = torch.from_numpy(self.user_factors[histories.users])
        return users @ torch.from_numpy(self.item_factors).T

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        f = state["item_factors"].shape[-1] if "item_factors" in state else None
        self._expect(
            state,
            {
                "user_factors": ((self.n_users, f), ("float32",)),
                "item_factors": ((self.n_items, f), ("float32",)),
            },
        )
        self.user_factors, self.item_factors = state["user_factors"], state["item_factors"]
