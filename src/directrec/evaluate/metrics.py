"""Top-K ranking metrics from target ranks, vectorised over a batch of users.

A target's rank is the number of candidate items scored strictly higher (0-based), so a
tie is counted in the target's favour — the convention of the shared reference values.
Each metric returns one value per user; padding targets have rank +inf.
"""

from __future__ import annotations

import torch

METRICS = ("recall", "hr", "ndcg", "mrr", "precision", "f1")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Ranks [B, T] of `targets` (item indices [B, T], -1 = padding) in `scores` [B, N].

    Excluded items must already carry -inf; a target that is itself -inf gets rank +inf.
    """
    valid = targets >= 0
    t_scores = scores.gather(1, targets.clamp(min=0))
    if targets.shape[1] <= 4:  # few targets (leave-one-out): compare directly, O(B·N) each
        ranks = torch.stack(
            [(scores > t_scores[:, j : j + 1]).sum(1) for j in range(targets.shape[1])], 1
        ).to(torch.float32)
    else:  # many targets: sort once and binary-search
        asc = scores.sort(1).values
        above = asc.shape[1] - torch.searchsorted(asc, t_scores.contiguous(), right=True)
        ranks = above.to(torch.float32)
    return torch.where(valid & torch.isfinite(t_scores), ranks, torch.full_like(ranks, torch.inf))


def ranking_metrics(
    ranks: torch.Tensor, n_targets: torch.Tensor, k: int
) -> dict[str, torch.Tensor]:
    """Per-user Recall, HR, NDCG, MRR, Precision and F1 at `k`.

    `n_targets` counts each user's relevant items (including any that could not be ranked,
    so they count as misses). Recall = hits / n_targets; HR = 1 if any hit; NDCG = DCG / IDCG
    with gain 1/log2(rank + 2); MRR = 1/(rank + 1) of the best-ranked hit; Precision =
    hits / k.
    """
    hit = ranks < k
    hits = hit.sum(1).to(torch.float32)
    n = n_targets.to(torch.float32).clamp(min=1)
    gains = torch.where(hit, 1.0 / torch.log2(ranks.clamp(max=1e9) + 2.0), torch.zeros_like(ranks))
    dcg = gains.sum(1)
    positions = torch.arange(k, dtype=torch.float32, device=ranks.device)
    ideal = (1.0 / torch.log2(positions + 2.0)).cumsum(0)
    idcg = ideal[(n.clamp(max=k) - 1).long()]
    best = torch.where(hit, ranks, torch.full_like(ranks, torch.inf)).min(1).values
    recall = hits / n
    precision = hits / k
    f1 = torch.where(
        hits > 0,
        2 * precision * recall / (precision + recall).clamp(min=1e-12),
        torch.zeros_like(hits),
    )
    return {
        "recall": recall,
        "hr": (hits > 0).to(torch.float32),
        "ndcg": dcg / idcg,
        "mrr": torch.where(torch.isfinite(best), 1.0 / (best + 1.0), torch.zeros_like(best)),
        "precision": precision,
        "f1": f1,
    }


def intra_list_diversity(topk: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine distance (1 − cos) among each user's top-K items [B, K], using
    L2-normalised item `features` [N, d]. Lists of one item have diversity 0."""
    f = torch.nn.functional.normalize(features, dim=1)[topk]  # [B, K, d]
    k = topk.shape[1]
    if k < 2:
        return torch.zeros(topk.shape[0])
    sim = f @ f.transpose(1, 2)
    off_diag = sim.sum((1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(1)
    return 1.0 - off_diag / (k * (k - 1))


def novelty(topk: torch.Tensor, popularity: torch.Tensor, n_users: int) -> torch.Tensor:
    """Mean self-information −log2(p(i)) of recommended items, p(i) = share of users who
    interacted with i (unseen items get p = 1/n_users)."""
    p = (popularity.to(torch.float32).clamp(min=1.0) / max(n_users, 1))[topk]
    return (-torch.log2(p)).mean(1)
