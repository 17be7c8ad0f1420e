"""The one recommendation pipeline: the model's candidates (popularity for rows it cannot
personalise), never a seen or excluded item → where fitted stages change scores (cold-item
gate, prior by history length, query prior; generate/stages.py), the model's scores through
them → top-K pool → category filter → MMR diversity → explanations.

The CLI, the benchmark's evaluator, batch generation and the service all call these
functions, so a list is built the same way wherever it is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import scipy.sparse as sp
import torch

from directrec.data.histories import Histories
from directrec.generate.explain import Reason, Request, category_shares, explain
from directrec.generate.rerank import category_filter, mmr
from directrec.generate.stages import Stages
from directrec.models.base import Recommender
from directrec.models.candidates import Candidates, mask_rows

Exclusions = Sequence[np.ndarray] | sp.csr_matrix | None


@dataclass(frozen=True)
class ItemInfo:
    """What the pipeline knows of each item in the model's index (filters, MMR, reasons)."""

    titles: list[str]
    categories: list[list[str]]
    vectors: np.ndarray | None = None  # L2-normalised text embeddings, for MMR

    @cached_property
    def category_shares(self) -> dict[str, float]:
        """Share of the catalogue carrying each category (reasons cite specific ones)."""
        return category_shares(self.categories)


@dataclass(frozen=True)
class ListOptions:
    """How one list is built. Defaults: top-10 of unseen items, the model's order."""

    k: int = 10
    exclude_seen: bool = True
    exclude_categories: frozenset[str] = field(default_factory=frozenset)
    # MMR knob: 0 = the model's order; None = the fitted diversify stage's weight (0 without)
    diversity: float | None = None
    explain: bool = False
    pool_factor: int = 5  # candidates per slot when filtering or diversifying
    request: str = ""  # free text for models that read it (the LM's prompt); others ignore it
    # A sentence-only request: each item's cosine to the sentence [n_items]. The fitted
    # query prior (the QueryBlend stage) is mixed into this row.
    query_sims: np.ndarray | None = field(default=None, compare=False, repr=False)
    # The sentence behind the first `query_items` history items (its nearest items, a new
    # user's pseudo history): reasons citing those read as matches to it.
    query: str = ""
    query_items: int = 0

    def pool(self) -> int:
        wide = bool(self.diversity) or bool(self.exclude_categories)
        return self.k * (self.pool_factor if wide else 1)

    def resolved(self, stages: Stages | None) -> ListOptions:
        """These options with the knobs left to the fitted stages filled in."""
        if self.diversity is not None:
            return self
        fitted = stages.diversify if stages is not None else None
        if fitted is None:
            return replace(self, diversity=0.0)
        return replace(self, diversity=fitted.weight, pool_factor=fitted.pool_factor)


@dataclass
class RecList:
    items: np.ndarray  # item indices, best first (never -1)
    scores: np.ndarray
    fallback: bool  # the model could not personalise: popularity
    reasons: list[Reason] | None = None


def _exclusion_rows(exclude: Exclusions, n_rows: int) -> list[np.ndarray]:
    if exclude is None:
        return [np.zeros(0, dtype=np.int64)] * n_rows
    if sp.issparse(exclude):
        m = exclude.tocsr()
        return [m.indices[m.indptr[r] : m.indptr[r + 1]].astype(np.int64) for r in range(n_rows)]
    if len(exclude) != n_rows:
        raise ValueError("exclusions: one array per history row")
    return [np.asarray(e, dtype=np.int64) for e in exclude]


# One batch's dense scores stay near this many floats (512 MB a copy): at 10^6 items a
# batch of 1,024 users would hold 4 GB in each of the few copies scoring makes.
SCORES_PER_BATCH = 2**27


def rows_per_batch(n_items: int, most: int) -> int:
    """Users to score per model call: `most`, fewer on a catalogue large enough that one
    batch's [users, n_items] scores would pass SCORES_PER_BATCH floats."""
    return max(1, min(most, SCORES_PER_BATCH // max(n_items, 1)))


def exclusions(
    histories: Histories,
    n_items: int,
    exclude_seen: bool | np.ndarray = True,
    exclude: Exclusions = None,
) -> sp.csr_matrix:
    """The items each row may not list, [len(histories), n_items]: its history (where
    `exclude_seen`, a flag or a per-row mask) and its `exclude` items."""
    b = len(histories)
    seen_rows = np.broadcast_to(np.asarray(exclude_seen, dtype=bool), (b,))
    extra_rows = _exclusion_rows(exclude, b)
    r = histories.row_of_items()
    keep = seen_rows[r]
    lengths = np.array([len(e) for e in extra_rows], dtype=np.int64)
    rows = np.concatenate([r[keep], np.repeat(np.arange(b), lengths)])
    cols = np.concatenate([histories.items[keep], *extra_rows]).astype(np.int64)
    ok = (cols >= 0) & (cols < n_items)
    m = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.float32), (rows[ok], cols[ok])), shape=(b, n_items)
    )
    m.sum_duplicates()
    return m


def ranked(
    model: Recommender,
    histories: Histories,
    k: int,
    *,
    exclude_seen: bool | np.ndarray = True,
    exclude: Exclusions = None,
    hidden: sp.csr_matrix | None = None,
    requests: Sequence[str] | None = None,
    query_sims: Sequence[np.ndarray | None] | None = None,
    stages: Stages | None = None,
    keep: torch.Tensor | None = None,
) -> Candidates:
    """Each row's best `k` candidates, none of them in its history (where `exclude_seen`,
    a flag or a per-row mask) or its `exclude` items: the model's own (`Recommender.top`),
    or, where a fitted stage changes scores (rows with `query_sims` get the query prior),
    the model's scores through those stages. `hidden` [B, n_items]: more items masked
    like seen ones, for which a generator does not search wider (the rest of a history
    that `histories` holds only the latest part of). `keep`: items [B, T] listed with
    their scores wherever they rank (evaluation's targets; `Candidates.from_scores`)."""
    excl = exclusions(histories, model.n_items, exclude_seen, exclude)
    q_rows = np.array([r for r, q in enumerate(query_sims or []) if q is not None], dtype=np.int64)
    if stages is None or not stages.changes_scores(model, len(q_rows) > 0):
        if hidden is None:
            return model.top(histories, k, requests=requests, exclude=excl, keep=keep)
        if not model.capabilities.generator:
            return model.top(histories, k, requests=requests, exclude=excl + hidden, keep=keep)
        # the popularity rows (nothing searched) rank the hidden items out like seen ones
        fallback = model.fallback(histories, requests).astype(np.float32)
        excl = excl + sp.diags(fallback) @ hidden
        found = model.top(histories, k, requests=requests, exclude=excl, keep=keep)
        return found.without(hidden)
    scores = model.score(histories, k=model.width(histories, k, excl), requests=requests)
    q_sims = np.stack([query_sims[r] for r in q_rows]) if len(q_rows) else None  # type: ignore[index]
    stages.apply_scores(model, histories, scores, q_rows, q_sims)
    mask_rows(scores, excl)
    mask_rows(scores, hidden)
    return Candidates.from_scores(scores, k, keep)


def recommend(
    model: Recommender,
    histories: Histories,
    options: ListOptions | Sequence[ListOptions] = ListOptions(),
    *,
    exclude: Exclusions = None,
    info: ItemInfo | None = None,
    stages: Stages | None = None,
) -> list[RecList]:
    """One list per history row (see module doc). `options` is one for all rows or one
    per row; `info` is needed for category filters, diversity and explanations; `stages`
    are the model's fitted stages (none: the model's own scores)."""
    opts = [options] * len(histories) if isinstance(options, ListOptions) else list(options)
    if len(opts) != len(histories):
        raise ValueError("options: one per history row")
    opts = [o.resolved(stages) for o in opts]
    if any(o.diversity for o in opts) and (info is None or info.vectors is None):
        raise ValueError("diversity re-ranks by the items' text embeddings (ItemInfo.vectors)")
    if any(o.k < 1 for o in opts):
        raise ValueError("k must be at least 1")
    if len(histories) == 0:
        return []
    pool = min(max(o.pool() for o in opts), model.n_items)
    found = ranked(
        model,
        histories,
        pool,
        exclude_seen=np.array([o.exclude_seen for o in opts]),
        exclude=exclude,
        requests=[o.request for o in opts],
        query_sims=[o.query_sims for o in opts],
        stages=stages,
    )
    found = found.head(pool)  # a generator may have written more
    items, vals = found.items.numpy(), found.scores.numpy()
    fallback = model.fallback(histories, [o.request for o in opts])
    excluded = _exclusion_rows(exclude, len(histories))
    out = []
    for r, o in enumerate(opts):
        it, sc = items[r], vals[r]
        keep = it >= 0
        it, sc = it[keep], sc[keep]
        if o.exclude_categories:
            if info is None:
                raise ValueError("category filters need item categories (ItemInfo)")
            keep = category_filter(it, info.categories, set(o.exclude_categories))
            it, sc = it[keep], sc[keep]
        if o.diversity:
            it, sc = mmr(it, sc, info.vectors, o.k, o.diversity)  # type: ignore[union-attr]
        it, sc = it[: o.k], sc[: o.k]
        reasons = None
        if o.explain and info is not None and explains(model) and not fallback[r]:
            hidden = [histories[r]] if o.exclude_seen else []  # what the list could not show
            reasons = explain(
                model,
                histories.take([r]),
                it,
                info.titles,
                info.categories,
                stages=stages,
                shares=info.category_shares,
                masked=np.concatenate([*hidden, excluded[r]]),
                request=Request(o.query, o.query_items, o.query_sims),
            )
        out.append(RecList(it, sc, bool(fallback[r]), reasons))
    return out


def explains(model: Recommender) -> bool:
    """Leave-one-out influence needs a model whose scores follow the history it is given."""
    return model.capabilities.personalises == "history"


def finite_or_none(x: float) -> float | None:
    """JSON-safe score: generators give unlisted items -inf."""
    return float(x) if math.isfinite(x) else None
