"""Explanations computed from the model itself: leave-one-out influence.

For a recommended item r and a user's history h, each history item j is removed in turn
(one forward pass per removal, all batched). Evidence for r is only what measurably
supports it: removing j must cost r rank places. Among those, the most *specific* comes
first: the drop in r's log-probability minus the mean drop over the whole list. A sequence
model leans on the newest item for everything; that item moves every recommendation alike
and so explains none of them in particular, while an older item that lifts r alone does.

Where no single removal moves r (several similar items each make the others redundant),
the history items of r's most specific category are removed together in the same batch;
if that costs r places, the reason cites the group ("Because you liked 5 Nail Polish
items, among them X and Y."). Either way nothing is cited without a measured rank loss.

The sentence names each cited item once (two items with one title are named once) and the
most specific category r shares with its evidence: the one the fewest catalogue items
carry, never one carried by more than half the catalogue (a root such as "Beauty" says
nothing). History items that stand for a sentence (a new user's request turned into its
nearest items) are worded as matches to that sentence, not as things the user liked.
`bench/explain.py` checks faithfulness (removing the cited evidence must lower r's rank),
the share of reasons that cite evidence and a specific category, and the distinct items a
list cites.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from directrec.data.histories import Histories
from directrec.generate.stages import Stages
from directrec.models.base import Recommender

BROAD = 0.5  # a category carried by more than this share of the catalogue is never cited


@dataclass
class Reason:
    item: int
    evidence: list[int]  # history items (indices), strongest first (a group: newest first)
    # Rank places the item loses when each evidence item is removed; for a group, one
    # number: the places lost when the whole group is removed together.
    influence: list[float]
    shared: list[str]  # the category cited: specific, carried by the item and its evidence
    text: str
    group: str = ""  # the category whose history items were removed together, if any


@dataclass(frozen=True)
class Request:
    """A sentence behind the first `items` history items (its nearest catalogue items,
    which the user never saw), and each item's similarity to it for the query prior."""

    text: str = ""
    items: int = 0
    sims: np.ndarray | None = field(default=None, compare=False, repr=False)


def category_shares(categories: Sequence[Sequence[str]]) -> dict[str, float]:
    """Share of the catalogue that carries each category (an item counts once)."""
    counts = Counter(c for cats in categories for c in set(cats))
    n = max(len(categories), 1)
    return {c: k / n for c, k in counts.items()}


def specific(cats: set[str], shares: Mapping[str, float]) -> list[str]:
    """`cats` carried by at most half the catalogue, the rarest (most specific) first."""
    return sorted((c for c in cats if shares.get(c, 1.0) <= BROAD), key=lambda c: (shares[c], c))


def _effects(
    model: Recommender,
    user: Histories,
    variants: list[np.ndarray],
    items: np.ndarray,
    k: int,
    stages: Stages | None,
    masked: np.ndarray,
    request: Request,
) -> tuple[np.ndarray, np.ndarray]:
    """(rank loss [variants, items], log-probability drop [variants, items]) of each
    reduced history against the full one, scored as the list was built: the fitted
    `stages` (with the query prior where the request has one), ranks among the items the
    list could show (all but `masked`)."""
    rows = [user[0], *variants]
    batch = Histories.from_lists(rows, model.n_items, users=np.full(len(rows), user.users[0]))
    scores = model.score(batch, k=k)
    if stages is not None:
        q_rows = np.arange(len(rows)) if request.sims is not None else None
        q_sims = np.tile(request.sims, (len(rows), 1)) if request.sims is not None else None
        stages.apply_scores(model, batch, scores, q_rows, q_sims)
    finite = torch.isfinite(scores)
    floor = scores[finite].min() - 1.0 if finite.any() else torch.tensor(0.0)
    scores = torch.where(finite, scores, floor)  # generators: "not written" is the lowest score
    if len(masked):
        scores[:, torch.as_tensor(np.unique(masked))] = -torch.inf
    idx = torch.as_tensor(np.asarray(items, dtype=np.int64))
    sel = scores[:, idx]  # [1 + V, T]
    ranks = (scores[:, None, :] > sel[:, :, None]).sum(-1)  # [1 + V, T]
    logp = sel - torch.logsumexp(scores, dim=1, keepdim=True)
    return (ranks[1:] - ranks[0:1]).numpy(), (logp[0:1] - logp[1:]).numpy()


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
    loss, drop = _effects(
        model, user, [user.without(0, j) for j in pos], items, k, stages, history, Request()
    )
    return pos, loss, drop


def _groups(
    history: np.ndarray,
    items: np.ndarray,
    categories: Sequence[Sequence[str]],
    shares: Mapping[str, float],
) -> dict[int, str]:
    """Per recommended item, its most specific category that at least two history items
    carry, though not all of them (removing the group leaves a history to score)."""
    carried = Counter(c for h in np.unique(history) for c in set(categories[int(h)]))
    n_hist = len(np.unique(history))
    out = {}
    for item in items:
        ok = [c for c in specific(set(categories[int(item)]), shares) if 2 <= carried[c] < n_hist]
        if ok:  # rarest in the catalogue; ties: the group with more of the user's items
            out[int(item)] = min(ok, key=lambda c: (shares[c], -carried[c], c))
    return out


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
    *,
    shares: Mapping[str, float] | None = None,
    masked: np.ndarray | None = None,
    request: Request = Request(),
) -> list[Reason]:
    """A reason per recommended item: up to `cite` history items whose removal costs the
    item rank places, the most specific to it first (its log-probability drop beyond the
    list's mean drop; ties: more places lost), each title named once; else the group of
    history items in its most specific category, if removing them together costs places;
    else nothing is cited and the reason says so. `user` holds one row; `masked` are the
    items the list could not show (default: the history); `shares` the catalogue share of
    each category (computed from `categories` when not given)."""
    history = user[0]
    items = np.asarray(items, dtype=np.int64)
    if len(history) == 0 or len(items) == 0:
        return [Reason(int(i), [], [], [], "Popular with other users.") for i in items]
    shares = category_shares(categories) if shares is None else shares
    masked = history if masked is None else np.asarray(masked, dtype=np.int64)
    pos = np.arange(max(0, len(history) - window), len(history))
    groups = _groups(history, items, categories, shares)
    cats = sorted(set(groups.values()))
    in_cat = [np.array([c in categories[int(h)] for h in history]) for c in cats]
    variants = [user.without(0, j) for j in pos] + [history[~m] for m in in_cat]
    k = max(100, 3 * len(items))
    loss, drop = _effects(model, user, variants, items, k, stages, masked, request)
    rank_loss, logp_drop = loss[: len(pos)], drop[: len(pos)]
    lift = logp_drop - logp_drop.mean(axis=1, keepdims=True)  # [positions, items]
    # An item the user named counts as liked even if the sentence also brought it up.
    matched = set(history[: request.items].tolist()) - set(history[request.items :].tolist())
    out = []
    for n, item in enumerate(items):
        item = int(item)
        evidence: list[int] = []
        infl: list[float] = []
        names: set[str] = set()
        for j in np.lexsort((-rank_loss[:, n], -lift[:, n])):
            e = int(history[pos[j]])
            if rank_loss[j, n] <= 0 or e in evidence or name(titles, e) in names:
                continue
            evidence.append(e)
            infl.append(float(rank_loss[j, n]))
            names.add(name(titles, e))
            if len(evidence) == cite:
                break
        group = ""
        if not evidence and item in groups:
            g = cats.index(groups[item])
            if loss[len(pos) + g, n] > 0:
                group = groups[item]
                newest = history[in_cat[g]][::-1]
                evidence = list(dict.fromkeys(int(e) for e in newest))
                infl = [float(loss[len(pos) + g, n])]
        if group:
            shared, everyone = [group], True
        elif evidence:
            common = set(categories[item]).intersection(*(set(categories[e]) for e in evidence))
            shared, everyone = specific(common, shares)[:1], True
            if not shared:  # none all of them share: the one the first item named shares
                first = min(evidence, key=lambda e: e in matched)  # liked ones are named first
                shared = specific(set(categories[item]) & set(categories[first]), shares)
                shared, everyone = shared[:1], False
        else:
            shared, everyone = [], True
        text = sentence(
            item, evidence, shared, titles, verb, query=request.text, matched=matched,
            group=group, everyone=everyone,
        )  # fmt: skip
        out.append(Reason(item, evidence, infl, shared, text, group))
    return out


def name(titles: Sequence[str], item: int) -> str:
    return titles[item] or f"item {item}"


def _quoted(query: str, limit: int = 60) -> str:
    q = " ".join(query.split())
    return f'"{q if len(q) <= limit else q[: limit - 1].rstrip() + "…"}"'


def _and(titles: Sequence[str], items: Sequence[int]) -> str:
    return " and ".join(dict.fromkeys(name(titles, e) for e in items))


def sentence(
    item: int,
    evidence: list[int],
    shared: list[str],
    titles: Sequence[str],
    verb: str = "liked",
    *,
    query: str = "",
    matched: set[int] | frozenset[int] = frozenset(),
    group: str = "",
    everyone: bool = True,
) -> str:
    """The reason in words. `matched` evidence came from the sentence `query` and reads as
    a match to it; `shared[0]` is the category cited (by the item and all its evidence,
    or where not `everyone`, by the item and the first item named); a `group` names how
    many history items of that category were removed together and two of them."""
    if not evidence:
        if query:
            return f"Matches {_quoted(query)} as a whole; no single item stands out."
        return "Fits your history as a whole; no single item stands out."
    liked = [e for e in evidence if e not in matched]
    via = [e for e in evidence if e in matched]
    if group and len(evidence) > 2:
        examples = " and ".join(list(dict.fromkeys(name(titles, e) for e in evidence))[:2])
        if liked:
            return f"Because you {verb} {len(evidence)} {group} items, among them {examples}."
        return (
            f"Matches {_quoted(query)} like the {len(evidence)} {group} items it brings up, "
            f"among them {examples}."
        )
    does = "does" if len({name(titles, e) for e in via}) == 1 else "do"
    if liked and via:
        text = f"Because you {verb} {_and(titles, liked)}, and matches {_quoted(query)} as "
        text += f"{_and(titles, via)} {does}"
    elif liked:
        text = f"Because you {verb} {_and(titles, liked)}"
    else:
        text = f"Matches {_quoted(query)}, as {_and(titles, via)} {does}"
    if shared and everyone:
        cited = len({name(titles, e) for e in evidence})
        both = "both" if cited == 1 else "all three" if cited == 2 else "all"
        text += f"; {both} are {shared[0]}"
    elif shared:
        text += f"; like the first, it is {shared[0]}"
    return text + "."
