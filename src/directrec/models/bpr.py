"""BPR-MF (Rendle et al. 2009): pairwise ranking loss, trained by the `implicit` library."""

from __future__ import annotations

import dataclasses

import numpy as np
from threadpoolctl import threadpool_limits

from directrec.data.dataset import Catalog, Interactions
from directrec.models.base import Validator
from directrec.models.factors import FactorModel
from directrec.models.settings import Checks, ModelConfig, setting


class BPR(FactorModel):
    name = "bpr"
    summary = "BPR-MF: matrix factorisation with a pairwise ranking loss (implicit library)"

    @dataclasses.dataclass
    class Config(ModelConfig):
        factors: int = setting(64, "latent factors per user and item")
        # Chosen on ML-1M leave-one-out *validation* (bench/tune.py), never on test.
        learning_rate: float = setting(0.01, "SGD step size", part="training")
        regularization: float = setting(0.001, "L2 weight on the factors")
        iterations: int = setting(100, "passes over the interactions", part="training")

        def checks(self) -> Checks:
            return {
                "factors": (self.factors >= 1, ">= 1"),
                "learning_rate": (self.learning_rate > 0, "> 0"),
                "regularization": (self.regularization >= 0, ">= 0"),
                "iterations": (self.iterations >= 1, ">= 1"),
            }

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
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
            model.fit(data.matrix("binary"), show_progress=False)
        # implicit appends an item-bias column (and a constant 1 to users).
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
