"""MostPopular: every user gets the items most users interacted with."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from directrec.data.dataset import Catalog, Interactions
from directrec.models.base import Recommender


class MostPopular(Recommender):
    """Scores each item by how many training users interacted with it."""

    name = "pop"

    @dataclasses.dataclass
    class Config:
        seed: int = 42

    def _fit(self, data: Interactions, catalog: Catalog | None) -> None:
        pass  # the base class already counts popularity

    def score(self, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.popularity).expand(len(users), -1)
