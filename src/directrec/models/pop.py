"""MostPopular: every user gets the items most users interacted with."""

from __future__ import annotations

import torch

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models.base import Recommender, Validator


class MostPopular(Recommender):
    """Scores each item by how many training users interacted with it."""

    name = "pop"
    summary = "most popular items among training users (the floor every model must beat)"

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        pass  # the base class already counts popularity

    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        return torch.from_numpy(self.popularity).expand(len(histories), -1)
