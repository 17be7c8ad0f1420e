"""CFGAN (Chae et al., CIKM 2018): a conditional GAN whose generator writes a user's whole
purchase vector. Vector-wise training with the paper's two devices: partial masking (PM,
the discriminator sees the generator's output only on the user's items plus sampled
negatives) and zero reconstruction (ZR, sampled negatives are pushed towards 0).

GANs for top-N recommendation are known to be fragile and often lose to simple baselines
(Ferrari Dacrema et al. 2019/2021); this is an honest baseline, not a tuned contender.

Trained by the shared epoch loop (`training.train_by_epochs`: validation keeps the best
epoch, early stopping, a budget, checkpoints), in one process: the two players' alternating
steps do not map onto one DDP forward and backward.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models import distributed
from directrec.models.base import Capabilities, Recommender, Validator
from directrec.models.settings import Checks, LoopConfig, setting
from directrec.models.training import EpochRun, rank_shares, train_by_epochs


def mlp(sizes: list[int], out: nn.Module) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes[:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]), out)


class CFGAN(Recommender):
    name = "cfgan"
    summary = "CFGAN: conditional GAN whose generator writes a user's whole item vector"
    capabilities = Capabilities(early_stopping=True)

    @dataclasses.dataclass
    class Config(LoopConfig):
        part: ClassVar[str] = "model"  # of the settings declared here
        RENAMED: ClassVar[dict[str, str]] = {"lr_g": "lr"}  # saved configs' old names

        hidden: int = setting(256, "width of the generator's and discriminator's hidden layers")
        # 600: on MovieLens-100K's validation stage HR@10 is 0.0329 at 30 epochs, 0.0615 at
        # 100 (below popularity's 0.0742), 0.0891 at 300 and 0.1082 at 600 (public
        # implementations run ~1000). Its validation curve rises and falls for hundreds of
        # epochs (NDCG@10 0.025 at 10, 0.038 at 100, 0.026 at 110), so patience never ends
        # the run: it is read every 10 epochs and the best epoch is kept
        epochs: int = 600
        batch_size: int = setting(128, "users per batch")
        eval_every: int = 10
        patience: int = 60
        lr: float = setting(1e-4, "generator learning rate (Adam)")
        lr_d: float = setting(1e-4, "discriminator learning rate (Adam)", part="training")
        pm_ratio: float = setting(0.3, "share of a user's negatives shown to D (partial masking)")
        zr_ratio: float = setting(0.3, "share of negatives pushed to zero (zero reconstruction)")
        zr_weight: float = setting(0.1, "weight of the zero-reconstruction loss")

        def checks(self) -> Checks:
            return {
                "hidden": (self.hidden >= 1, ">= 1"),
                "lr_d": (self.lr_d > 0, "> 0"),
                "pm_ratio": (0 <= self.pm_ratio <= 1, "a share in [0, 1]"),
                "zr_ratio": (0 <= self.zr_ratio <= 1, "a share in [0, 1]"),
                "zr_weight": (self.zr_weight >= 0, ">= 0"),
            }

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        c, n, dev = self.config, self.n_items, self.device
        if distributed.current().active:
            raise ValueError("cfgan trains in one process; run it without torchrun")
        self.gen = mlp([n, c.hidden, c.hidden, n], nn.Sigmoid()).to(dev)
        disc = mlp([2 * n, c.hidden, c.hidden, 1], nn.Sigmoid()).to(dev)
        players = nn.ModuleDict({"gen": self.gen, "disc": disc})  # what validation keeps
        # One Adam over both players, each group at its own rate: a step moves only the
        # parameters that have a gradient, so it is two Adams in one checkpointable state.
        opt = torch.optim.Adam(
            [
                {"params": self.gen.parameters(), "lr": c.lr},
                {"params": disc.parameters(), "lr": c.lr_d, "peak_lr": c.lr_d},
            ],
            weight_decay=c.weight_decay,
        )
        x_all = data.matrix("binary")
        users = np.flatnonzero(np.diff(x_all.indptr) > 0)

        def epoch_fn(epoch: int, run: EpochRun) -> float:
            return self._epoch(disc, opt, x_all, users, epoch, run)

        train_by_epochs(self, players, epoch_fn, validator, opt=opt, data=data)

    def _epoch(
        self,
        disc: nn.Module,
        opt: torch.optim.Optimizer,
        x_all: sp.csr_matrix,
        users: np.ndarray,
        epoch: int,
        run: EpochRun,
    ) -> float:
        """One pass over the users (order and masks depend on (seed, epoch) alone, so a
        resumed run continues exactly): a discriminator step, then a generator step, per
        batch. Returns the generator's mean loss."""
        c, dev = self.config, self.device
        self.gen.train()
        torch.manual_seed(c.seed * 100_003 + epoch)
        order = np.random.default_rng([c.seed, epoch]).permutation(users)
        bce = nn.BCELoss()
        total, count = 0.0, 0
        for _, rows in rank_shares(order, c.batch_size, run):  # one rank: the whole batch
            x = torch.from_numpy(x_all[rows].toarray()).to(dev)
            neg = x == 0
            pm = (torch.rand_like(x) < c.pm_ratio) & neg
            zr = (torch.rand_like(x) < c.zr_ratio) & neg
            ones, zeros = torch.ones(len(x), 1, device=dev), torch.zeros(len(x), 1, device=dev)
            # Discriminator: real vectors vs the generator's (partially masked) output.
            fake = self.gen(x) * (x + pm)
            d_loss = bce(disc(torch.cat([x, x], 1)), ones) + bce(
                disc(torch.cat([fake.detach(), x], 1)), zeros
            )
            opt.zero_grad(set_to_none=True)
            d_loss.backward()
            opt.step()  # the generator has no gradient here: only D moves
            # Generator: fool D, and reconstruct zeros on the ZR sample (D frozen).
            disc.requires_grad_(False)
            try:
                out = self.gen(x)
                g_adv = bce(disc(torch.cat([out * (x + pm), x], 1)), ones)
                g_zr = ((out * zr) ** 2).sum(1).mean()
                g_loss = g_adv + c.zr_weight * g_zr
                opt.zero_grad(set_to_none=True)
                g_loss.backward()
                opt.step()
            finally:
                disc.requires_grad_(True)
            total += g_loss.item() * len(x)
            count += len(x)
        return total / max(count, 1)

    @torch.no_grad()
    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        # Rank by the generator's logits, not its sigmoid: a trained generator saturates
        # many items to exactly 1.0 in float32, and those ties would rank arbitrarily.
        x = torch.from_numpy(histories.matrix().toarray()).to(self.device)
        return self.gen[:-1](x)

    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.cpu().numpy() for k, v in self.gen.state_dict().items()}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        c, n = self.config, self.n_items
        self.gen = mlp([n, c.hidden, c.hidden, n], nn.Sigmoid())
        self._load_module(self.gen, state)
        self.gen.to(self.device).eval()
