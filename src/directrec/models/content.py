"""Content-based: items are their content vectors (the `item_features` setting: text by
all-MiniLM-L6-v2, images by EfficientNet-Lite0, or both); a user is the weighted mean of
their history's vectors; items are ranked by cosine to it.

Weights: the rating when the data has ratings (else 1), times an optional recency decay
0.5^(age / half_life), age counted in interactions from the most recent one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models.base import Capabilities, Recommender, Validator, torch_csr
from directrec.models.settings import Checks, ModelConfig, setting


class ContentBased(Recommender):
    name = "content"
    summary = "items ranked by cosine of their text/image embedding to the user's history"
    capabilities = Capabilities(needs_text=True)

    @dataclasses.dataclass
    class Config(ModelConfig):
        half_life: float = setting(
            0.0,
            "recency decay: a history item's weight halves every this many interactions back (0 = no decay)",
        )
        use_ratings: bool = setting(
            True, "weigh history items by their rating when the data has ratings"
        )

        def checks(self) -> Checks:
            return {"half_life": (self.half_life >= 0, ">= 0 (0 = no decay)")}

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        if catalog is None or catalog.embeddings is None:
            raise ValueError(
                "the content model needs item vectors: ingest an item catalogue with titles "
                "or text (--items), or images with --set item_features=image"
            )
        if not np.abs(catalog.embeddings).sum(1).any():
            raise ValueError("the content model needs item content, but every item's is empty")
        self.embeddings = torch.from_numpy(np.asarray(catalog.embeddings, dtype=np.float32))

    def profile_weights(self, histories: Histories) -> sp.csr_matrix:
        """Each history item's weight in the user's profile (rating × recency decay)."""
        w = np.ones(len(histories.items), dtype=np.float32)
        if self.config.use_ratings and histories.ratings is not None:
            w = np.maximum(histories.ratings.astype(np.float32), 1e-3)
        if self.config.half_life > 0:
            row = histories.row_of_items()
            age = histories.indptr[row + 1] - np.arange(len(histories.items)) - 1
            w = w * np.power(0.5, age / self.config.half_life, dtype=np.float32)
        return sp.csr_matrix(
            (w, (histories.row_of_items(), histories.items)),
            shape=(len(histories), self.n_items),
        )

    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        profile = torch_csr(self.profile_weights(histories)) @ self.embeddings
        profile = torch.nn.functional.normalize(profile, dim=1)
        return profile @ self.embeddings.T

    def _state(self) -> dict[str, np.ndarray]:
        return {"embeddings": self.embeddings.numpy()}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        self._expect(state, {"embeddings": ((self.n_items, None), ("float32",))})
        self.embeddings = torch.from_numpy(state["embeddings"])
