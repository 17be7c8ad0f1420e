"""The evaluator pinned to the protocol behind the shared reference values
(../shared/data/README.md), on synthetic sequences: an independent brute-force
computation in plain Python/numpy (leave-one-out, full ranking, train+validation items
excluded, one target per user, NDCG gain 1/log2(rank+2) with 0-based rank, ties counted
in the target's favour) must equal what fit_model + evaluate report, for popularity and
for EASE. The real-data figures (ML-1M popularity 0.0392/0.0193, EASE λ=500
0.1108/0.0551) are reproduced by bench/zoo.sh; tests may not read shared data."""

from __future__ import annotations

import numpy as np
import pytest

from directrec.data.dataset import Interactions
from directrec.data.split import leave_one_out
from directrec.evaluate.protocol import evaluate, fit_model
from directrec.models import create


def sequences(seed: int = 3, users: int = 150, items: int = 60) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, items + 1) ** 0.7
    out = []
    for u in range(users):
        n = int(rng.integers(3, 15))
        near = (u * 7 + np.arange(8)) % items  # a taste, so EASE has something to learn
        seq: list[int] = []
        while len(seq) < n:
            i = (
                int(rng.choice(near))
                if rng.random() < 0.6
                else int(rng.choice(items, p=pop / pop.sum()))
            )
            if not seq or seq[-1] != i:  # repeats allowed, just not back to back
                seq.append(i)
        out.append(seq)
    return out


def brute_force(seqs: list[list[int]], n_items: int, scorer) -> tuple[float, float]:
    """HR@10 and NDCG@10 by the reference protocol, one user at a time. A target the user
    already has cannot be ranked and is left out (the evaluator's rule; the reference data
    sets have no repeats)."""
    hr = ndcg = 0.0
    users = 0
    for seq in seqs:
        history, target = seq[:-1], seq[-1]  # train + validation, then the test item
        scores = scorer(history)
        seen = set(history)
        if target in seen:
            continue
        users += 1
        rank = sum(1 for i in range(n_items) if i not in seen and scores[i] > scores[target])
        if rank < 10:
            hr += 1
            ndcg += 1 / np.log2(rank + 2)
    return hr / users, ndcg / users


@pytest.fixture(scope="module")
def data():
    seqs = sequences()
    user = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    item = np.concatenate([np.array(s) for s in seqs])
    return seqs, Interactions(user, item, len(seqs), 60)


def project(data, name, **settings):
    _, inter = data
    split = leave_one_out(inter)
    model = create(name, settings)
    inputs = fit_model(model, split, "test")
    _, seen, targets = split.stage("test")
    m = evaluate(model, inputs, targets, (10,), seen=seen).metrics
    return m["hr@10"], m["ndcg@10"]


def test_popularity_matches_the_reference_protocol(data):
    seqs, _ = data
    counts = np.zeros(60)
    for s in seqs:  # popularity = users per item over train + validation
        for i in set(s[:-1]):
            counts[i] += 1
    hr, ndcg = brute_force(seqs, 60, lambda h: counts)
    phr, pndcg = project(data, "pop")
    assert phr == pytest.approx(hr, abs=1e-6)
    assert pndcg == pytest.approx(ndcg, abs=1e-6)


def test_ease_matches_the_reference_protocol(data):
    seqs, _ = data
    x = np.zeros((len(seqs), 60))
    for u, s in enumerate(seqs):
        x[u, list(set(s[:-1]))] = 1.0
    lam = 50.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(60))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    hr, ndcg = brute_force(seqs, 60, lambda h: np.isin(np.arange(60), h).astype(float) @ b)
    phr, pndcg = project(data, "ease", l2=lam)
    assert hr > 0.1  # the check means something: EASE finds the planted taste
    assert phr == pytest.approx(hr, abs=1e-6)
    assert pndcg == pytest.approx(ndcg, abs=1e-5)
