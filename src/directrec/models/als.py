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


class ALS(FactorModel):
    name = "als"

    @dataclasses.dataclass
    class Config:
        factors: int = 64
        regularization: float = 0.05
        alpha: float = 2.0
        iterations: int = 15
        seed: int = 42

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
