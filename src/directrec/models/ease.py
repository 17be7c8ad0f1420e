"""EASE (Steck, WWW 2019): a closed-form item-item linear autoencoder.

B = I − P·diag(1/diag(P)) with P = (XᵀX + λI)⁻¹ and diag(B) = 0; scores = x_u B. The inverse
is dense (n_items²): fine to ~30k items on this machine, use ItemKNN or ALS beyond that.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models.base import Recommender, Validator, torch_csr
from directrec.models.settings import Checks, ModelConfig, setting


class EASE(Recommender):
    name = "ease"
    summary = "EASE: closed-form item-item linear autoencoder (dense, up to ~30k items)"

    @dataclasses.dataclass
    class Config(ModelConfig):
        l2: float = setting(500.0, "λ, the L2 weight of the closed form: larger for denser data")

        def checks(self) -> Checks:
            return {"l2": (self.l2 > 0, "> 0 (the closed form inverts the Gram matrix plus it)")}

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        x = data.matrix("binary")
        gram = torch.from_numpy((x.T @ x).toarray().astype(np.float64))
        gram.diagonal().add_(self.config.l2)
        p = torch.linalg.inv(gram)
        b = p / (-p.diagonal())
        b.diagonal().zero_()
        self.weights = b.to(torch.float32)

    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        return torch_csr(histories.matrix()) @ self.weights

    def _state(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights.numpy()}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        n = self.n_items
        self._expect(state, {"weights": ((n, n), ("float32",))})
        self.weights = torch.from_numpy(state["weights"])
