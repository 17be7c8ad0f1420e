"""CFGAN (Chae et al., CIKM 2018): a conditional GAN whose generator writes a user's whole
purchase vector. Vector-wise training with the paper's two devices: partial masking (PM,
the discriminator sees the generator's output only on the user's items plus sampled
negatives) and zero reconstruction (ZR, sampled negatives are pushed towards 0).

GANs for top-N recommendation are known to be fragile and often lose to simple baselines
(Ferrari Dacrema et al. 2019/2021); this is an honest baseline, not a tuned contender.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models.base import Recommender, Validator
from directrec.models.settings import Checks, ModelConfig, setting


def mlp(sizes: list[int], out: nn.Module) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes[:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]), out)


class CFGAN(Recommender):
    name = "cfgan"
    summary = "CFGAN: conditional GAN whose generator writes a user's whole item vector"

    @dataclasses.dataclass
    class Config(ModelConfig):
        hidden: int = setting(256, "width of the generator's and discriminator's hidden layers")
        # 600: on MovieLens-100K's validation stage HR@10 is 0.0329 at 30 epochs, 0.0615 at
        # 100 (below popularity's 0.0742), 0.0891 at 300 and 0.1082 at 600 (public
        # implementations run ~1000)
        epochs: int = setting(600, "passes over the users", part="training")
        batch_size: int = setting(128, "users per batch", part="training")
        lr_g: float = setting(1e-4, "generator learning rate (Adam)", part="training")
        lr_d: float = setting(1e-4, "discriminator learning rate (Adam)", part="training")
        pm_ratio: float = setting(0.3, "share of a user's negatives shown to D (partial masking)")
        zr_ratio: float = setting(0.3, "share of negatives pushed to zero (zero reconstruction)")
        zr_weight: float = setting(0.1, "weight of the zero-reconstruction loss")

        def checks(self) -> Checks:
            return {
                "hidden": (self.hidden >= 1, ">= 1"),
                "epochs": (self.epochs >= 0, ">= 0"),
                "batch_size": (self.batch_size >= 1, ">= 1"),
                "lr_g": (self.lr_g > 0, "> 0"),
                "lr_d": (self.lr_d > 0, "> 0"),
                "pm_ratio": (0 <= self.pm_ratio <= 1, "a share in [0, 1]"),
                "zr_ratio": (0 <= self.zr_ratio <= 1, "a share in [0, 1]"),
                "zr_weight": (self.zr_weight >= 0, ">= 0"),
            }

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        c, n, dev = self.config, self.n_items, self.device
        self.gen = mlp([n, c.hidden, c.hidden, n], nn.Sigmoid()).to(dev)
        disc = mlp([2 * n, c.hidden, c.hidden, 1], nn.Sigmoid()).to(dev)
        opt_g = torch.optim.Adam(self.gen.parameters(), lr=c.lr_g)
        opt_d = torch.optim.Adam(disc.parameters(), lr=c.lr_d)
        bce = nn.BCELoss()
        x_all = data.matrix("binary")
        users = np.flatnonzero(np.diff(x_all.indptr) > 0)
        rng = np.random.default_rng(c.seed)
        for _ in tqdm(range(c.epochs), desc="cfgan", disable=not self.run.progress):
            rng.shuffle(users)
            for b in range(0, len(users), c.batch_size):
                x = torch.from_numpy(x_all[users[b : b + c.batch_size]].toarray()).to(dev)
                neg = x == 0
                pm = (torch.rand_like(x) < c.pm_ratio) & neg
                zr = (torch.rand_like(x) < c.zr_ratio) & neg
                ones, zeros = torch.ones(len(x), 1, device=dev), torch.zeros(len(x), 1, device=dev)
                # Discriminator: real vectors vs the generator's (partially masked) output.
                fake = self.gen(x) * (x + pm)
                d_loss = bce(disc(torch.cat([x, x], 1)), ones) + bce(
                    disc(torch.cat([fake.detach(), x], 1)), zeros
                )
                opt_d.zero_grad()
                d_loss.backward()
                opt_d.step()
                # Generator: fool D, and reconstruct zeros on the ZR sample.
                out = self.gen(x)
                g_adv = bce(disc(torch.cat([out * (x + pm), x], 1)), ones)
                g_zr = ((out * zr) ** 2).sum(1).mean()
                g_loss = g_adv + c.zr_weight * g_zr
                opt_g.zero_grad()
                g_loss.backward()
                opt_g.step()
        self.gen.eval()

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
