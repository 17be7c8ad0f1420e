"""What the explicit-rating models share: a mini-batch training loop over (user, item,
rating) triples and `predict`. Each model is its own small `nn.Module` (see biasedmf.py,
svdpp.py, nmf.py) whose forward maps (users, items) to predicted ratings."""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models.base import Capabilities, Recommender, Validator
from directrec.models.settings import Checks, ModelConfig, setting


@dataclasses.dataclass
class RatingConfig(ModelConfig):
    factors: int = setting(64, "latent factors per user and item")
    epochs: int = setting(30, "passes over the ratings", part="training")
    batch_size: int = setting(1024, "ratings per batch", part="training")
    lr: float = setting(3e-3, "Adam learning rate", part="training")
    # 0.1: the best of 0.05 / 0.075 / 0.1 / 0.15 on a validation hold-out of MovieLens-100K's
    # training ratings for biasedmf and svdpp, within 0.0003 of nmf's best (0.075)
    reg: float = setting(0.1, "L2 on the parameters a batch touches, per rating")

    def checks(self) -> Checks:
        return {
            "factors": (self.factors >= 1, ">= 1"),
            "epochs": (self.epochs >= 0, ">= 0"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "reg": (self.reg >= 0, ">= 0"),
        }


class RatingModel(Recommender):
    """A recommender whose scores are predicted ratings (for top-N use, and for RMSE/MAE)."""

    Config = RatingConfig
    capabilities = Capabilities(personalises="user", rating=True)  # per-user factors
    net: nn.Module

    def build(self, seen: sp.csr_matrix) -> nn.Module:
        """The network; `seen` is the training users' item matrix (SVD++ reads it)."""
        raise NotImplementedError

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        if data.rating is None:
            raise ValueError(f"{self.name} predicts ratings, but this data has none")
        c = self.config
        self.global_mean = float(data.rating.mean())
        self.net = self.build(data.matrix("binary"))
        opt = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        u = torch.from_numpy(data.user)
        i = torch.from_numpy(data.item)
        r = torch.from_numpy(data.rating.astype(np.float32))
        gen = torch.Generator().manual_seed(c.seed)
        self.net.train()
        for _ in tqdm(range(c.epochs), desc=self.name, disable=not self.run.progress):
            perm = torch.randperm(len(r), generator=gen)
            for b in range(0, len(r), c.batch_size):
                idx = perm[b : b + c.batch_size]
                pred, penalty = self.net(u[idx], i[idx])
                loss = ((pred - r[idx]) ** 2).mean() + c.reg * penalty
                opt.zero_grad()
                loss.backward()
                opt.step()
                self.after_step()
        self.net.eval()

    def after_step(self) -> None:
        """Hook for projections (NMF keeps its factors non-negative)."""

    @torch.no_grad()
    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings for (user, item) pairs of users the model was fit on."""
        pred, _ = self.net(torch.as_tensor(users), torch.as_tensor(items))
        return pred.numpy()

    @torch.no_grad()
    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        n, users = self.n_items, histories.users
        uu = torch.from_numpy(np.repeat(users, n))
        ii = torch.arange(n).repeat(len(users))
        return self.net(uu, ii)[0].view(len(users), n)

    def _state(self) -> dict[str, np.ndarray]:
        state = {k: v.detach().numpy() for k, v in self.net.state_dict().items()}
        return {**state, "global_mean": np.array([self.global_mean], dtype=np.float32)}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        mean = state.pop("global_mean", np.zeros(0, dtype=np.float32))
        if mean.shape != (1,) or mean.dtype != np.float32:
            raise ValueError("weights.safetensors: model.global_mean must be one float32")
        self.global_mean = float(mean[0])
        self.net = self.build(None)
        self._load_module(self.net, state)
        self.net.eval()
