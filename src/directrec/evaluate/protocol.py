"""Full-ranking evaluation, and the one fit protocol every caller uses.

Evaluation: every user's targets are ranked against all items. The model scores from
`inputs` (each user's history as the model reads it); seen items (`seen`, the user's whole
history, by default the inputs) are excluded. Targets that are excluded (an item the user
had already consumed) cannot be ranked and are dropped; users left with no target are not
evaluated. Scoring runs in user batches through the shared pipeline (generate/pipeline.py),
so memory is bounded by `batch_size × n_items` scores (fewer users per batch on a large
catalogue: `pipeline.rows_per_batch`).

Fit protocol (`fit_model`): models that stop early train on the training part, pick their
epoch by validation NDCG@10, and then score with the validation item in their history (the
SASRec/TIGER protocol); the others fit on everything before the stage's targets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.data.split import Split, Targets
from directrec.evaluate.metrics import (
    intra_list_diversity,
    novelty,
    ranking_metrics,
    target_ranks,
)
from directrec.generate.pipeline import ranked, rows_per_batch
from directrec.generate.rerank import normalised
from directrec.generate.stages import Stages
from directrec.models.base import Recommender
from directrec.progress import Steps
from directrec.progress import stage as spinner

SEGMENTS = (("<=5", 0, 5), ("6-20", 6, 20), (">20", 21, np.iinfo(np.int64).max))


@dataclass
class EvalResult:
    """Mean metrics (keys like 'ndcg@10'), per-segment means, and counts; `per_user` keeps
    each evaluated user's value (in the order of `users`) for paired tests between models.
    It stays out of `as_dict`: a results document holds the means only."""

    metrics: dict[str, float]
    segments: dict[str, dict[str, float]] = field(default_factory=dict)
    n_users: int = 0
    n_skipped: int = 0
    seconds: float = 0.0
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    per_user: dict[str, np.ndarray] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "metrics": self.metrics,
            "segments": self.segments,
            "n_users": self.n_users,
            "n_users_skipped": self.n_skipped,
            "seconds": round(self.seconds, 3),
        }


def codes_view(model: Recommender) -> Recommender | None:
    """What `evaluate(codes_only=...)` reports beside a semantic-ID hybrid: the model
    decoding by its codes alone; None for every other model."""
    from directrec.models.semantic import SemanticID

    return model.codes_only() if isinstance(model, SemanticID) else None


def evaluate(
    model: Recommender,
    inputs: Interactions,
    targets: Targets,
    ks: tuple[int, ...] = (10, 20),
    *,
    seen: Interactions | None = None,
    exclude_seen: bool = True,
    batch_size: int = 1024,
    item_features: np.ndarray | sp.spmatrix | None = None,
    progress: bool = False,
    stages: Stages | None = None,
    item_vectors: np.ndarray | None = None,
    codes_only: Recommender | None = None,
) -> EvalResult:
    """Evaluate `model` (with its fitted `stages`, if any) on `targets`, scoring from
    `inputs` and excluding items in `seen` (default: the inputs) when `exclude_seen`.

    `item_features` (dense embeddings or a sparse category matrix) enables intra-list
    diversity; coverage and novelty are always reported. `item_vectors` (text embeddings
    in the model's index) are what a fitted diversify stage re-ranks by.

    `codes_only`: the semantic-ID hybrid's view without its ID head (its `codes_only()`),
    scored on the same histories without stages: its own ranking metrics come out as
    `codes_only.<metric>@k`, and `beam_share@k` is the share of `model`'s top-k slots
    that the trie beam wrote (the items that view ranks at all) rather than the ID head.
    """
    start = time.perf_counter()
    seen = (seen if seen is not None else inputs).matrix("binary")
    hist_len = np.diff(seen.indptr)
    popularity = torch.from_numpy(np.asarray(seen.sum(0)).ravel())
    n_items, max_k = model.n_items, max(ks)
    vectors = None if item_vectors is None else normalised(item_vectors)
    feats = None
    if item_features is not None:
        dense = item_features.toarray() if sp.issparse(item_features) else item_features
        feats = torch.as_tensor(np.asarray(dense), dtype=torch.float32)

    per_user: dict[str, list[torch.Tensor]] = {}
    users_done: list[np.ndarray] = []
    covered = {k: torch.zeros(n_items, dtype=torch.bool) for k in ks}
    skipped = 0
    batch_size = rows_per_batch(n_items, batch_size)
    batches = range(0, len(targets), batch_size)
    bar = Steps(f"evaluate {model.name}", len(targets), on=progress, unit="users")
    for b in batches:
        bar.advance(min(batch_size, len(targets) - b))
        users = targets.users[b : b + batch_size]
        lo, hi = targets.indptr[b], targets.indptr[min(b + batch_size, len(targets))]
        counts = np.diff(targets.indptr[b : b + batch_size + 1])
        items = targets.items[lo:hi]
        rows = np.repeat(np.arange(len(users)), counts)
        if exclude_seen:  # drop targets the user had already consumed
            keep = np.asarray(seen[users[rows], items]).ravel() == 0
            rows, items = rows[keep], items[keep]
            counts = np.bincount(rows, minlength=len(users))
        ok = counts > 0
        skipped += int((~ok).sum())
        if not ok.any():
            continue
        users, counts = users[ok], counts[ok]
        rows = np.repeat(np.arange(len(users)), counts)
        col = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        padded = torch.full((len(users), int(counts.max())), -1, dtype=torch.long)
        padded[torch.from_numpy(rows), torch.from_numpy(col)] = torch.from_numpy(items)

        histories = Histories.from_interactions(inputs, users)
        # the whole history, also what a context cap left out of the inputs
        hidden = seen[users] if exclude_seen else None
        pool = stages.pool(max_k) if stages is not None else max_k
        found = ranked(
            model,
            histories,
            pool,
            exclude_seen=exclude_seen,
            hidden=hidden,
            stages=stages,
            keep=padded,
        )
        if stages is not None:  # the fitted re-ranking, as recommend() applies it
            found = stages.rerank(found, vectors, max_k)
        ranks = target_ranks(found.items, found.scores, padded)
        n_t = torch.from_numpy(counts)
        for k in ks:
            for name, vals in ranking_metrics(ranks, n_t, k).items():
                per_user.setdefault(f"{name}@{k}", []).append(vals)
        top = found.head(max_k).items
        if top.shape[1] < max_k:  # rows shorter than max_k: pad
            top = torch.nn.functional.pad(top, (0, max_k - top.shape[1]), value=-1)
        for k in ks:
            listed = top[:, :k].reshape(-1)
            covered[k][listed[listed >= 0]] = True
            per_user.setdefault(f"novelty@{k}", []).append(
                novelty(top[:, :k], popularity, seen.shape[0])
            )
            if feats is not None:
                per_user.setdefault(f"diversity@{k}", []).append(
                    intra_list_diversity(top[:, :k], feats)
                )
        if codes_only is not None:
            own = ranked(
                codes_only, histories, max_k, exclude_seen=exclude_seen, hidden=hidden, keep=padded
            )
            own_ranks = target_ranks(own.items, own.scores, padded)
            for k in ks:
                for name, vals in ranking_metrics(own_ranks, n_t, k).items():
                    per_user.setdefault(f"codes_only.{name}@{k}", []).append(vals)
                # a slot counts as the beam's when the codes-only view wrote its item
                wrote = (top[:, :k, None] == own.items[:, None, :]).any(-1) & (top[:, :k] >= 0)
                per_user.setdefault(f"beam_share@{k}", []).append(wrote.float().mean(1))
        users_done.append(users)

    bar.close()
    if not users_done:
        raise ValueError("no user could be evaluated (no targets outside the history)")
    cols = {name: torch.cat(v).numpy() for name, v in per_user.items()}
    done = np.concatenate(users_done)
    metrics = {name: float(v.mean()) for name, v in cols.items()}
    for k in ks:
        metrics[f"coverage@{k}"] = float(covered[k].float().mean())
    lengths = hist_len[done]
    segments = {}
    for label, lo_len, hi_len in SEGMENTS:
        sel = (lengths >= lo_len) & (lengths <= hi_len)
        seg = {name: float(v[sel].mean()) for name, v in cols.items() if sel.any()}
        seg["users"] = int(sel.sum())
        segments[label] = seg
    return EvalResult(
        metrics=metrics,
        segments=segments,
        n_users=len(done),
        n_skipped=skipped,
        seconds=time.perf_counter() - start,
        users=done,
        per_user=cols,
    )


def validator(
    inputs: Interactions,
    targets: Targets,
    seen: Interactions | None = None,
    metric: str = "ndcg@10",
    max_users: int | None = None,
    seed: int = 0,
) -> Callable[[Recommender], float]:
    """A callback for early stopping: `metric` on (a fixed sample of) validation targets."""
    if max_users is not None and len(targets) > max_users:
        pick = np.sort(np.random.default_rng(seed).choice(len(targets), max_users, replace=False))
        counts = np.diff(targets.indptr)[pick]
        items = np.concatenate(
            [targets.items[targets.indptr[j] : targets.indptr[j + 1]] for j in pick]
        )
        targets = Targets(targets.users[pick], np.concatenate([[0], np.cumsum(counts)]), items)
    k = int(metric.split("@")[1])

    def run(model: Recommender) -> float:
        return evaluate(model, inputs, targets, (k,), seen=seen).metrics[metric]

    return run


def fit_model(
    model: Recommender,
    split: Split,
    stage: str,
    catalog: Catalog | None = None,
    *,
    max_history: int | None = None,
    valid_users: int | None = None,
    cap_training: bool = False,
) -> Interactions:
    """Fit `model` for `stage` by the protocol (module doc) and return the interactions
    its histories are read from when scoring that stage's targets.

    Stages: `valid` (fit on train, score validation), `test` (fit on train + validation,
    or train with early stopping on validation; score test), and `all` (deploy: fit on
    everything, or everything but each user's last item with early stopping on it).

    `max_history` caps the context a model reads (its inputs), not what it learns from,
    unless `cap_training` (the old rule: the fit data is capped too)."""

    def cap(data: Interactions) -> Interactions:
        return data.last_n(max_history) if cap_training else data

    if stage == "all":
        before_last = Interactions.concat(split.train, split.valid)
        everything = Interactions.concat(before_last, split.test)
        if model.capabilities.early_stopping:
            check = validator(
                before_last.last_n(max_history),
                split.test_targets,
                seen=before_last,
                max_users=valid_users,
            )
            model.fit(cap(before_last), catalog, validator=check)
        else:
            model.fit(cap(everything), catalog)
        return everything.last_n(max_history)
    if model.capabilities.early_stopping and stage == "test":
        v_fit, v_seen, v_targets = split.stage("valid", max_history, cap_training)
        check = validator(
            split.inputs("valid", max_history), v_targets, seen=v_seen, max_users=valid_users
        )
        model.fit(v_fit, catalog, validator=check)
    else:
        model.fit(split.stage(stage, max_history, cap_training)[0], catalog)
    return split.inputs(stage, max_history)


def fit_with_stages(
    model: Recommender,
    ds: Any,
    spec: dict[str, dict[str, Any]],
    holdout: str,
    *,
    seed: int = 42,
    db: Any = None,
    valid_users: int | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Any:
    """What `train` (CLI and API) does with a built model on a `Dataset`: item text
    embeddings where the model or a stage reads them (cached in the store `db` if given),
    the users and items the stages in `spec` need held out, the fit by the protocol above
    (`holdout` none: deploy on everything; loo: each user's last item kept out), then the
    stages fitted. Returns the fitted `Stages`."""
    from directrec.data.split import leave_one_out
    from directrec.generate.fitting import StagePlan
    from directrec.text.features import for_model, of_model

    if holdout not in ("none", "loo"):
        raise ValueError("holdout must be none or loo")
    plan = StagePlan.from_spec(spec, seed)
    wants_text = model.capabilities.needs_text or bool(
        {"query_blend", "diversify"} & set(plan.stages)
    )
    if wants_text and "query_blend" in plan.stages and of_model(model) != "text":
        # a request's sentence is embedded as text: it is only comparable to text vectors
        raise ValueError("stage query_blend reads item text vectors: use item_features text")
    if wants_text:
        for_model(model, ds, db, progress=model.run.progress)
    model.meta["item_features"] = of_model(model)  # what MMR on its lists reads later
    data = plan.hold_out(ds.interactions, model)
    part = "all" if holdout == "none" else "test"
    # models that train by epochs show their own epoch bar; the others a spinner
    on = model.run.progress and not model.capabilities.early_stopping
    with spinner(f"fit {model.name}", on=on):
        fit_model(model, leave_one_out(data), part, ds.catalog, valid_users=valid_users)
    return plan.fit(model, ds.interactions, ds.catalog, holdout, log=log)
