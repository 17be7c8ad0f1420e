"""Content-based: items are their text embeddings (all-MiniLM-L6-v2); a user is the
weighted mean of their history's embeddings; items are ranked by cosine to it.

Weights: the rating when the data has ratings (else 1), times an optional recency decay
0.5^(age / half_life), age counted in interactions from the most recent one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch

from directrec.data.dataset import Catalog, Interactions
from directrec.models.base import Recommender, csr_from_state, csr_to_state, torch_csr


class ContentBased(Recommender):
    name = "content"
    needs_text = True

    @dataclasses.dataclass
    class Config:
        half_life: float = 0.0  # 0 = no recency decay
        use_ratings: bool = True
        seed: int = 42

    def _fit(self, data: Interactions, catalog: Catalog | None) -> None:
        if catalog is None or catalog.embeddings is None:
            raise ValueError(
                "the content model needs item text embeddings: ingest an item catalogue "
                "with titles or text (--items)"
            )
        if not np.abs(catalog.embeddings).sum(1).any():
            raise ValueError("the content model needs item text, but every item's text is empty")
        self.embeddings = torch.from_numpy(np.asarray(catalog.embeddings, dtype=np.float32))

    def _on_history(self, data: Interactions) -> None:
        """A user's profile weights come from their current history."""
        w = np.ones(len(data), dtype=np.float32)
        if self.config.use_ratings and data.rating is not None:
            w = np.maximum(data.rating.astype(np.float32), 1e-3)
        if self.config.half_life > 0:
            age = data.indptr[data.user + 1] - np.arange(len(data)) - 1
            w = w * np.power(0.5, age / self.config.half_life, dtype=np.float32)
        self.weights = sp.csr_matrix(
            (w, (data.user, data.item)), shape=(self.n_users, self.n_items)
        )

    def score(self, users: np.ndarray) -> torch.Tensor:
        profile = torch_csr(self.weights[users]) @ self.embeddings
        profile = torch.nn.functional.normalize(profile, dim=1)
        return profile @ self.embeddings.T

    def _state(self) -> dict[str, np.ndarray]:
        return {**csr_to_state("weights", self.weights), "embeddings": self.embeddings.numpy()}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self.weights = csr_from_state("weights", state)
        self.embeddings = torch.from_numpy(state["embeddings"])
