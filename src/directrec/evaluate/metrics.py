"""Top-K ranking metrics from target ranks, vectorised over a batch of users.

A target's rank is the number of candidate items scored strictly higher (0-based), so a
tie is counted in the target's favour — the convention of the shared reference values.
Each metric returns one value per user; padding targets have rank +inf.
"""

from __future__ import annotations

import torch

METRICS = ("recall", "hr", "ndcg", "mrr", "precision", "f1")


def target_ranks(items: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Ranks [B, T] of `targets` (item indices [B, T], -1 = padding) among each row's
    candidates: `items` [B, m] (-1 = padding) with their `scores`, sorted best first.

    A target's rank is the number of candidates scored strictly higher; one that is not a
    candidate (or scores -inf) ranks +inf. With the targets among the candidates
    (`Candidates.from_scores(..., keep=targets)`), a rank below the top k's size is the
    target's rank over the whole catalogue.
    """
    b, m = items.shape
    width = int(max(int(items.max()) if items.numel() else 0, int(targets.max()))) + 1
    rows = torch.arange(b)[:, None]
    ok = items >= 0
    keys = (rows * width + items.clamp(min=0))[ok]
    order = keys.argsort()
    keys, where = keys[order], torch.arange(b * m).view(b, m)[ok][order]
    t_keys = rows * width + targets.clamp(min=0)
    at = torch.searchsorted(keys, t_keys).clamp(max=max(len(keys) - 1, 0))
    found = (targets >= 0) & (len(keys) > 0)
    if len(keys):
        found &= keys[at] == t_keys
    t_scores = torch.where(found, scores.reshape(-1)[where[at]] if len(keys) else 0.0, -torch.inf)
    # scores fall along each row, so those strictly above a target come first
    ranks = torch.searchsorted((-scores).contiguous(), (-t_scores).contiguous(), side="left")
    return torch.where(
        found & torch.isfinite(t_scores), ranks.to(torch.float32), torch.tensor(torch.inf)
    )


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
    """Mean pairwise cosine distance (1 − cos) among each user's top-K items [B, K] (-1:
    a shorter list), using L2-normalised item `features` [N, d]. Lists of one item have
    diversity 0."""
    ok = (topk >= 0).to(torch.float32)
    f = torch.nn.functional.normalize(features, dim=1)[topk.clamp(min=0)] * ok[..., None]
    k = ok.sum(1)
    sim = f @ f.transpose(1, 2)
    off_diag = sim.sum((1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(1)
    pairs = k * (k - 1)
    return torch.where(pairs > 0, 1.0 - off_diag / pairs.clamp(min=1), torch.zeros_like(k))


def novelty(topk: torch.Tensor, popularity: torch.Tensor, n_users: int) -> torch.Tensor:
    """Mean self-information −log2(p(i)) of recommended items [B, K] (-1: a shorter list),
    p(i) = share of users who interacted with i (unseen items get p = 1/n_users)."""
    ok = (topk >= 0).to(torch.float32)
    p = (popularity.to(torch.float32).clamp(min=1.0) / max(n_users, 1))[topk.clamp(min=0)]
    return (-torch.log2(p) * ok).sum(1) / ok.sum(1).clamp(min=1)
