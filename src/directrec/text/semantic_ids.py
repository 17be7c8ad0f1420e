"""Semantic IDs: an RQ-VAE turns item text embeddings into short code tuples (TIGER,
Rajput et al. 2023), so similar items share code prefixes and new items get codes from
their text alone.

Guards against the known failure modes: inputs are standardised; each codebook is
initialised by k-means on its level's residuals; codes left unused in an epoch are reset to
random residuals (dead-code reset); a final token numbers the items that share a full code
tuple, so every item's ID is unique. `code_report` gives usage per level and collisions.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from directrec.progress import Steps


@dataclasses.dataclass
class RQVAEConfig:
    levels: int = 3
    codebook: int = 256
    latent: int = 32
    hidden: int = 256
    epochs: int = 200
    batch_size: int = 128  # small batches: a catalogue is small data, steps matter
    # a large catalogue needs fewer passes: the epochs stop at about this many steps
    # (at batch 128, catalogues up to 19.2k items train all 200 `epochs`; 10^6 items: 4;
    # never fewer than 2, the k-means start needing the second)
    max_steps: int = 30_000
    lr: float = 2e-3
    beta: float = 0.25  # commitment weight
    seed: int = 42


def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Plain Lloyd k-means (k-means++-free: random distinct starts), returns centroids."""
    g = torch.Generator().manual_seed(seed)
    k_eff = min(k, len(x))
    centroids = x[torch.randperm(len(x), generator=g)[:k_eff]].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k_eff).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    if k_eff < k:  # fewer points than codes: duplicate with small noise
        extra = centroids[torch.randint(0, k_eff, (k - k_eff,), generator=g)]
        centroids = torch.cat([centroids, extra + 1e-3 * torch.randn(extra.shape, generator=g)])
    return centroids


class RQVAE(nn.Module):
    """MLP encoder → residual quantisation over `levels` codebooks → MLP decoder."""

    def __init__(self, dim: int, c: RQVAEConfig) -> None:
        super().__init__()
        self.c = c
        self.encoder = nn.Sequential(
            nn.Linear(dim, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(c.latent, c.hidden), nn.GELU(), nn.Linear(c.hidden, dim)
        )
        self.codebooks = nn.Parameter(torch.zeros(c.levels, c.codebook, c.latent))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Codes [N, levels], quantised latent [N, latent], and each level's residual."""
        residual, quantised, codes, residuals = z, torch.zeros_like(z), [], []
        for level in range(self.c.levels):
            residuals.append(residual)
            idx = torch.cdist(residual, self.codebooks[level]).argmin(1)
            chosen = self.codebooks[level][idx]
            codes.append(idx)
            quantised = quantised + chosen
            residual = residual - chosen
        return torch.stack(codes, 1), quantised, residuals

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder((x - self.mean) / self.std)
        codes, q, residuals = self.quantise(z)
        # Codebook + commitment losses per level, straight-through estimator for the decoder.
        vq = 0.0
        for level in range(self.c.levels):
            chosen = self.codebooks[level][codes[:, level]]
            vq = (
                vq
                + F.mse_loss(chosen, residuals[level].detach())
                + self.c.beta * F.mse_loss(residuals[level], chosen.detach())
            )
        q_st = z + (q - z).detach()
        recon = F.mse_loss(self.decoder(q_st), (x - self.mean) / self.std)
        return recon + vq, recon, codes

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor) -> None:
        z = self.encoder((x - self.mean) / self.std)
        residual = z
        for level in range(self.c.levels):
            self.codebooks[level] = kmeans(residual, self.c.codebook, seed=self.c.seed + level)
            residual = (
                residual
                - self.codebooks[level][torch.cdist(residual, self.codebooks[level]).argmin(1)]
            )

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantise(self.latent(x))[0]

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's continuous latent (before quantisation) of embeddings `x`."""
        return self.encoder((x - self.mean) / self.std)


def train_rqvae(
    embeddings: np.ndarray, c: RQVAEConfig, progress: bool = False
) -> tuple[RQVAE, list[dict]]:
    """Fit an RQ-VAE on item embeddings; returns the model and a per-epoch log."""
    torch.manual_seed(c.seed)
    x = torch.as_tensor(embeddings, dtype=torch.float32)
    model = RQVAE(x.shape[1], c)
    model.mean.copy_(x.mean(0))
    model.std.copy_(x.std(0).clamp(min=1e-6))
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    log: list[dict] = []
    per_epoch = math.ceil(len(x) / c.batch_size)
    epochs = min(c.epochs, max(2, math.ceil(c.max_steps / per_epoch)))  # ≥ 2: k-means init
    bar = Steps("RQ-VAE (semantic-ID codes)", epochs, on=progress, unit="epochs")
    for epoch in range(epochs):
        if epoch == 1:  # after one pass the encoder is no longer random: k-means init
            model.init_codebooks(x)
        used = torch.zeros(c.levels, c.codebook, dtype=torch.bool)
        order = torch.randperm(len(x))
        total = 0.0
        for b in range(0, len(x), c.batch_size):
            batch = x[order[b : b + c.batch_size]]
            loss, recon, codes = model(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(recon.detach()) * len(batch)
            for level in range(c.levels):
                used[level, codes[:, level]] = True
        if epoch >= 1 and epoch < epochs - 1:
            _reset_dead_codes(model, x, used)
        log.append(
            {"epoch": epoch + 1, "recon": total / len(x), "usage": used.float().mean(1).tolist()}
        )
        bar.advance(1, f"recon {total / len(x):.4f}")
    bar.close()
    model.eval()
    return model, log


@torch.no_grad()
def _reset_dead_codes(model: RQVAE, x: torch.Tensor, used: torch.Tensor) -> None:
    """Move each unused code onto a random residual of its level, so no code stays dead."""
    _, _, residuals = model.quantise(model.encoder((x - model.mean) / model.std))
    for level in range(model.c.levels):
        dead = (~used[level]).nonzero().ravel()
        if len(dead):
            pick = torch.randint(0, len(x), (len(dead),))
            model.codebooks[level, dead] = residuals[level][pick]


def make_unique(codes: np.ndarray) -> np.ndarray:
    """Append a token numbering items that share a full code tuple (0, 1, …), so every
    item's semantic ID is unique."""
    codes = np.asarray(codes, dtype=np.int64)
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    first = np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    suffix = np.empty(len(codes), dtype=np.int64)
    suffix[order] = rank
    return np.concatenate([codes, suffix[:, None]], 1)


def code_report(codes: np.ndarray, codebook: int) -> dict:
    """Usage per level (share of codebook entries used), collision rate (share of items
    whose code tuple, before the uniqueness token, is shared) and the longest collision."""
    levels = codes.shape[1]
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return {
        "usage_per_level": [len(np.unique(codes[:, j])) / codebook for j in range(levels)],
        "collision_rate": float(counts[counts > 1].sum() / len(codes)),
        "max_items_per_code": int(counts.max()),
    }
