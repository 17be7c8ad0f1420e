"""RQ-VAE codes, the uniqueness token and the usage/collision report."""

from __future__ import annotations

import numpy as np

from directrec.text.semantic_ids import RQVAEConfig, code_report, kmeans, make_unique, train_rqvae


def test_make_unique_numbers_collisions():
    codes = np.array([[1, 2], [1, 2], [0, 5], [1, 2], [0, 5], [3, 3]])
    out = make_unique(codes)
    assert out[:, -1].tolist() == [0, 1, 0, 2, 1, 0]
    assert len(np.unique(out, axis=0)) == len(codes)


def test_code_report_by_hand():
    codes = np.array([[0, 1], [0, 1], [2, 3], [1, 1]])
    r = code_report(codes, codebook=4)
    assert r["usage_per_level"] == [0.75, 0.5]
    assert r["collision_rate"] == 0.5 and r["max_items_per_code"] == 2


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    import torch

    x = torch.from_numpy(np.concatenate([rng.normal(c, 0.05, (50, 2)) for c in (-3, 0, 3)])).float()
    c = kmeans(x, 3).sort(0).values[:, 0]
    assert np.allclose(c.numpy(), [-3, 0, 3], atol=0.1)


def test_rqvae_learns_and_uses_its_codebooks():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(16, 24))
    x = (centres[rng.integers(0, 16, 400)] + 0.05 * rng.normal(size=(400, 24))).astype(np.float32)
    model, log = train_rqvae(
        x,
        RQVAEConfig(levels=2, codebook=16, latent=8, hidden=32, epochs=60, batch_size=64, lr=3e-3),
    )
    assert log[-1]["recon"] < 0.05 * log[0]["recon"]
    assert min(log[-1]["usage"]) > 0.5  # dead-code reset keeps codes alive
    import torch

    codes = model.encode(torch.from_numpy(x)).numpy()
    assert code_report(codes, 16)["usage_per_level"][0] >= 0.5


def test_a_large_catalogue_trains_fewer_epochs_at_about_the_step_budget():
    """`epochs` passes while they fit in `max_steps`; past it, as many passes as the step
    budget affords (never fewer than 2: the codebooks' k-means start needs the second)."""
    x = np.random.default_rng(1).normal(size=(640, 8)).astype(np.float32)  # 10 batches of 64
    small = dict(levels=1, codebook=4, latent=4, hidden=8, batch_size=64)
    for max_steps, epochs in ((1000, 7), (35, 4), (5, 2)):
        _, log = train_rqvae(x, RQVAEConfig(epochs=7, max_steps=max_steps, **small))
        assert len(log) == epochs
