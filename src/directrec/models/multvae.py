"""Mult-VAE (Liang et al., WWW 2018): a variational autoencoder over each user's item
vector with a multinomial likelihood; β is annealed from 0 to `beta_max`."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.models.base import Capabilities, Recommender, Validator
from directrec.models.settings import Checks, ModelConfig, setting


class VAE(nn.Module):
    def __init__(self, n_items: int, hidden: int, latent: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.enc = nn.Linear(n_items, hidden)
        self.enc_out = nn.Linear(hidden, 2 * latent)
        self.dec = nn.Linear(latent, hidden)
        self.dec_out = nn.Linear(hidden, n_items)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.drop(F.normalize(x, dim=1))
        mu, logvar = self.enc_out(torch.tanh(self.enc(h))).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        logits = self.dec_out(torch.tanh(self.dec(z)))
        kl = 0.5 * (-logvar + logvar.exp() + mu**2 - 1).sum(1).mean()
        return logits, kl


class MultVAE(Recommender):
    name = "multvae"
    summary = "Mult-VAE: variational autoencoder over each user's item set"
    capabilities = Capabilities(warm_start=True)

    @dataclasses.dataclass
    class Config(ModelConfig):
        hidden: int = setting(600, "encoder and decoder hidden width")
        latent: int = setting(200, "latent dimensions")
        dropout: float = setting(0.5, "dropout on the input history")
        beta_max: float = setting(0.2, "largest KL weight reached by annealing")
        anneal_steps: int = setting(
            20000, "batches over which the KL weight rises to beta_max", part="training"
        )
        epochs: int = setting(100, "passes over the users", part="training")
        batch_size: int = setting(500, "users per batch", part="training")
        lr: float = setting(1e-3, "Adam learning rate", part="training")

        def checks(self) -> Checks:
            return {
                "hidden": (self.hidden >= 1, ">= 1"),
                "latent": (self.latent >= 1, ">= 1"),
                "dropout": (0 <= self.dropout < 1, "in [0, 1)"),
                "beta_max": (self.beta_max >= 0, ">= 0"),
                "anneal_steps": (self.anneal_steps >= 1, ">= 1"),
                "epochs": (self.epochs >= 0, ">= 0"),
                "batch_size": (self.batch_size >= 1, ">= 1"),
                "lr": (self.lr > 0, "> 0"),
            }

    def _fit(
        self, data: Interactions, catalog: Catalog | None, validator: Validator | None
    ) -> None:
        c = self.config
        self.net = VAE(self.n_items, c.hidden, c.latent, c.dropout).to(self.device)
        self.step = 0  # β is annealed from 0 over the first `anneal_steps` steps
        self._train(data, validator)

    def _grow(self, data: Interactions, catalog: Catalog | None) -> None:
        """New items get zero input weights and fresh output rows."""
        old_n = self.n_items
        if data.n_items == old_n:
            return
        c = self.config
        grown = VAE(data.n_items, c.hidden, c.latent, c.dropout).to(self.device)
        with torch.no_grad():
            grown.enc.weight.zero_()
            grown.enc.weight[:, :old_n] = self.net.enc.weight
            grown.enc.bias.copy_(self.net.enc.bias)
            grown.dec_out.weight[:old_n] = self.net.dec_out.weight
            grown.dec_out.bias.fill_(float(self.net.dec_out.bias.min()))
            grown.dec_out.bias[:old_n] = self.net.dec_out.bias
            for name in ("enc_out", "dec"):
                getattr(grown, name).load_state_dict(getattr(self.net, name).state_dict())
        self.net = grown

    def _train(self, data: Interactions, validator: Validator | None) -> None:
        c, step = self.config, self.step
        opt = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        x_all = data.matrix("binary")
        users = np.flatnonzero(np.diff(x_all.indptr) > 0)
        gen = np.random.default_rng(c.seed)
        self.net.train()
        for _ in tqdm(range(c.epochs), desc="multvae", disable=not self.run.progress):
            gen.shuffle(users)
            for b in range(0, len(users), c.batch_size):
                x = torch.from_numpy(x_all[users[b : b + c.batch_size]].toarray()).to(self.device)
                logits, kl = self.net(x)
                nll = -(F.log_softmax(logits, 1) * x).sum(1).mean()
                beta = min(c.beta_max, c.beta_max * step / max(c.anneal_steps, 1))
                loss = nll + beta * kl
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
        self.step = step
        self.net.eval()

    @torch.no_grad()
    def _score(self, histories: Histories, k: int) -> torch.Tensor:
        return self.net(torch.from_numpy(histories.matrix().toarray()).to(self.device))[0]

    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.cpu().numpy() for k, v in self.net.state_dict().items()}

    def _load_state(self, state: dict[str, np.ndarray]) -> None:
        c = self.config
        self.net = VAE(self.n_items, c.hidden, c.latent, c.dropout)
        self._load_module(self.net, state)
        self.net.to(self.device).eval()
        self.step = c.anneal_steps  # a trained model is past β's annealing
