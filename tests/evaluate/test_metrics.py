"""Metrics against hand-computed values and against torchmetrics on random inputs."""

from __future__ import annotations

import math

import pytest
import torch

from directrec.evaluate.metrics import (
    intra_list_diversity,
    novelty,
    ranking_metrics,
    target_ranks,
)
from directrec.models.candidates import Candidates


def ranks_of(scores: torch.Tensor, targets: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Target ranks among each row's top-`k` (default: every item), the targets kept."""
    c = Candidates.from_scores(scores, k or scores.shape[1], keep=targets)
    return target_ranks(c.items, c.scores, targets)


def test_hand_computed_single_and_multi_target():
    # 6 items. User 0: target item 2 has the 3rd highest score → rank 2.
    # User 1: targets 0 and 5; item 0 ranks 0, item 5 ranks 4.
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.2, 0.3], [0.9, 0.1, 0.2, 0.3, 0.8, 0.4]])
    targets = torch.tensor([[2, -1], [0, 5]])
    ranks = ranks_of(scores, targets)
    assert ranks.tolist() == [[2.0, math.inf], [0.0, 2.0]]
    m = ranking_metrics(ranks, torch.tensor([1, 2]), k=2)
    assert m["hr"].tolist() == [0.0, 1.0]
    assert m["recall"].tolist() == [0.0, 0.5]
    assert m["precision"].tolist() == [0.0, 0.5]
    assert m["mrr"].tolist() == [0.0, 1.0]
    assert m["f1"][1].item() == pytest.approx(0.5)
    # NDCG@2 for user 1: DCG = 1/log2(2) = 1; IDCG = 1 + 1/log2(3).
    assert m["ndcg"][1].item() == pytest.approx(1 / (1 + 1 / math.log2(3)))
    m3 = ranking_metrics(ranks, torch.tensor([1, 2]), k=3)
    assert m3["ndcg"][0].item() == pytest.approx(1 / math.log2(4))  # rank 2 → 1/log2(4)
    assert m3["mrr"][0].item() == pytest.approx(1 / 3)
    assert m3["recall"][1].item() == 1.0


def test_ties_count_in_the_targets_favour_and_excluded_never_rank():
    scores = torch.tensor([[0.5, 0.5, 0.5, -math.inf]])
    ranks = ranks_of(scores, torch.tensor([[2, 3]]))
    assert ranks.tolist() == [[0.0, math.inf]]


@pytest.mark.parametrize("k", [None, 5])
def test_ranks_among_candidates_agree_with_counting_over_every_item(k):
    """Among the top k with the targets kept, a target's rank is the number of items of
    the whole catalogue scored strictly higher whenever that is below k (ties count in
    its favour), and at least k otherwise."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 12, (8, 50), generator=g).float()  # many ties
    scores[0, :3] = -math.inf
    targets = torch.randint(0, 50, (8, 7), generator=g)
    targets[1, 3:] = -1
    fast = ranks_of(scores, targets, k)
    slow = torch.stack(
        [(scores > scores.gather(1, targets[:, j : j + 1].clamp(min=0))).sum(1) for j in range(7)],
        1,
    ).float()
    slow = torch.where(
        (targets >= 0) & torch.isfinite(scores.gather(1, targets.clamp(min=0))), slow, math.inf
    )
    cut = math.inf if k is None else k
    assert torch.equal(
        torch.where(slow < cut, slow, math.inf), torch.where(fast < cut, fast, math.inf)
    )
    assert bool((fast[slow < cut] == slow[slow < cut]).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_check_with_torchmetrics(seed):
    tm = pytest.importorskip("torchmetrics.retrieval")
    g = torch.Generator().manual_seed(seed)
    n_users, n_items, k = 20, 30, 5
    scores = torch.rand(n_users, n_items, generator=g)  # continuous: no ties
    rel = torch.rand(n_users, n_items, generator=g) < 0.15
    rel[:, 0] |= ~rel.any(1)  # every user has a target
    n_t = rel.sum(1)
    targets = torch.full((n_users, int(n_t.max())), -1)
    for u in range(n_users):
        idx = rel[u].nonzero().ravel()
        targets[u, : len(idx)] = idx
    ours = ranking_metrics(ranks_of(scores, targets), n_t, k)
    indexes = torch.arange(n_users).repeat_interleave(n_items)
    preds, labels = scores.reshape(-1), rel.reshape(-1)
    refs = {
        "ndcg": tm.RetrievalNormalizedDCG(top_k=k),
        "recall": tm.RetrievalRecall(top_k=k),
        "precision": tm.RetrievalPrecision(top_k=k),
        "mrr": tm.RetrievalMRR(top_k=k),
        "hr": tm.RetrievalHitRate(top_k=k),
    }
    for name, metric in refs.items():
        expected = metric(preds, labels, indexes=indexes).item()
        assert ours[name].mean().item() == pytest.approx(expected, abs=1e-5), name


def test_diversity_and_novelty_by_hand():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # List (0, 1): orthogonal → distance 1. List (0, 2): identical → 0.
    ild = intra_list_diversity(torch.tensor([[0, 1], [0, 2]]), feats)
    assert ild.tolist() == pytest.approx([1.0, 0.0])
    pop = torch.tensor([4.0, 2.0, 1.0])  # of 4 users
    nov = novelty(torch.tensor([[0, 1]]), pop, 4)
    assert nov.item() == pytest.approx((0.0 + 1.0) / 2)


def test_a_shorter_list_counts_only_its_items():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    ild = intra_list_diversity(torch.tensor([[0, 1, -1], [2, -1, -1]]), feats)
    assert ild.tolist() == pytest.approx([1.0, 0.0])  # one pair; one item: no pair
    pop = torch.tensor([4.0, 2.0, 1.0])
    assert novelty(torch.tensor([[0, 1, -1]]), pop, 4).item() == pytest.approx(0.5)
