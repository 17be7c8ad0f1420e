"""ALS (Hu, Koren & Volinsky 2008) for implicit feedback, trained by the `implicit` library.

Confidence is 1 + alpha·x_ui; scores are user factors · item factors.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from threadpoolctl import threadpool_limits

from directrec.data.dataset import Catalog, Interactions
from directrec.models.base import Validator
from directrec.models.factors import FactorModel
from directrec.models.settings import Checks, ModelConfig, setting


class ALS(FactorModel):
    name = "als"
    summary = "ALS matrix factorisation for implicit feedback (implicit library)"

    @dataclasses.dataclass
    class Config(ModelConfig):
        factors: int = setting(64, "latent factors per user and item")
        regularization: float = setting(0.05, "L2 weight on the factors")
        alpha: float = setting(2.0, "confidence scale: an interaction counts as 1 + alpha")
        iterations: int = setting(15, "alternating least-squares sweeps", part="training")

        def checks(self) -> Checks:
            return {
                "factors": (self.factors >= 1, ">= 1"),
                "regularization": (self.regularization >= 0, ">= 0"),
                "alpha": (self.alpha >= 0, ">= 0"),
                "iterations": (self.iterations >= 1, ">= 1"),
            }

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        # implicit parallelises itself and warns (in its constructor) when BLAS threads are
        # on: BLAS is limited to one thread for the whole fit.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=c.factors,
                regularization=c.regularization,
                alpha=c.alpha,
                iterations=c.iterations,
                random_state=c.seed,
                calculate_training_loss=False,
            )
            model.fit(data.matrix("binary"), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
