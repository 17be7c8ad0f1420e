"""Explanations computed from the model itself: leave-one-out influence.

For a recommended item r and a user's history h, each history item j is removed in turn
(one forward pass per removal, all batched). Evidence for r is only what measurably
supports it: removing j must cost r rank places. Among those, the most *specific* comes
first: the drop in r's log-probability minus the mean drop over the whole list. A sequence
model leans on the newest item for everything; that item moves every recommendation alike
and so explains none of them in particular, while an older item that lifts r alone does.
The sentence cites the evidence and the categories it shares with r ("Because you watched
X and Y; all three are Sci-Fi."). `bench/explain.py` checks faithfulness (removing the
cited item must lower r's rank) and counts the distinct items a list cites.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from directrec.data.histories import Histories
from directrec.generate.stages import Stages
from directrec.models.base import Recommender


@dataclass
class Reason:
    item: int
    evidence: list[int]  # history items (indices), strongest first
    influence: list[float]  # rank places the item loses when each is removed
    shared: list[str]  # categories the evidence shares with the item
    text: str


def influence(
    model: Recommender,
    user: Histories,
    items: np.ndarray,
    window: int = 30,
    k: int = 100,
    stages: Stages | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(history positions tried, rank loss [positions, items], log-probability drop
    [positions, items]) when each history item is removed, the model's fitted `stages`
    applied as the list was built. Ranks count among the items outside the full history
    (the list the user was shown). Only the last `window` positions are tried (the ones a
    sequence model weighs most)."""
    history = user[0]
    pos = np.arange(max(0, len(history) - window), len(history))
    variants = Histories.from_lists(
        [history] + [user.without(0, j) for j in pos],
        model.n_items,
        users=np.full(len(pos) + 1, user.users[0]),
    )
    scores = model.score(variants, k=k)
    if stages is not None:
        stages.apply_scores(model, variants, scores)
    finite = torch.isfinite(scores)
    floor = scores[finite].min() - 1.0 if finite.any() else torch.tensor(0.0)
    scores = torch.where(finite, scores, floor)  # generators: "not written" is the lowest score
    scores[:, torch.as_tensor(np.unique(history))] = -torch.inf  # rank among unseen items
    idx = torch.as_tensor(np.asarray(items, dtype=np.int64))
    sel = scores[:, idx]  # [1 + W, T]
    ranks = (scores[:, None, :] > sel[:, :, None]).sum(-1)  # [1 + W, T]
    logp = sel - torch.logsumexp(scores, dim=1, keepdim=True)
    return pos, (ranks[1:] - ranks[0:1]).numpy(), (logp[0:1] - logp[1:]).numpy()


def explain(
    model: Recommender,
    user: Histories,
    items: Sequence[int],
    titles: Sequence[str],
    categories: Sequence[Sequence[str]],
    cite: int = 2,
    window: int = 30,
    verb: str = "liked",
    stages: Stages | None = None,
) -> list[Reason]:
    """A reason per recommended item: up to `cite` history items whose removal costs the
    item rank places, the most specific to it first (its log-probability drop beyond the
    list's mean drop; ties: more places lost). An item no single removal moves cites
    nothing and says so. `user` holds one row."""
    history = user[0]
    items = np.asarray(items, dtype=np.int64)
    if len(history) == 0 or len(items) == 0:
        return [Reason(int(i), [], [], [], "Popular with other users.") for i in items]
    pos, rank_loss, logp_drop = influence(
        model, user, items, window, k=max(100, 3 * len(items)), stages=stages
    )
    specific = logp_drop - logp_drop.mean(axis=1, keepdims=True)  # [positions, items]
    out = []
    for n, item in enumerate(items):
        order = np.lexsort((-rank_loss[:, n], -specific[:, n]))
        best = [int(j) for j in order if rank_loss[j, n] > 0][:cite]
        evidence = list(dict.fromkeys(int(history[pos[j]]) for j in best))
        infl = [float(rank_loss[j, n]) for j in best][: len(evidence)]
        shared = (
            sorted(set(categories[item]).intersection(*(set(categories[e]) for e in evidence)))
            if evidence
            else []
        )
        out.append(
            Reason(
                int(item), evidence, infl, shared, sentence(item, evidence, shared, titles, verb)
            )
        )
    return out


def sentence(
    item: int, evidence: list[int], shared: list[str], titles: Sequence[str], verb: str = "liked"
) -> str:
    if not evidence:
        return "Fits your history as a whole; no single item stands out."
    names = [titles[e] or f"item {e}" for e in evidence]
    text = f"Because you {verb} {' and '.join(names)}"
    if shared:
        both = "both" if len(evidence) == 1 else "all three" if len(evidence) == 2 else "all"
        text += f"; {both} are {', '.join(shared[:3])}"
    return text + "."
