"""Fitting the pipeline stages a recipe names (`[stages]`), around the model's own fit.

Each stage learns on data the model did not train on:
- `prior_blend` and `query_blend` on held-out users (`users`, default 500, each with at
  least 12 items), who are taken out of the model's training data;
- `cold_gate` on held-out items (`holdout`, a share of the catalogue's items, default
  0.1): their interactions are taken out of the model's training data, so they are cold
  to it, and the gate learns from validation cases whose target is one of them how such
  items enter lists without costing the warm ones more than `min_warm` of their NDCG@10.
  Those items stay cold in the saved model: they reach lists through the gate, as items
  added to the catalogue later (text only, no interactions) do.
- `diversify` on validation cases (`users` of them, default 2000: a user's last item before
  the test item, the items before it as the history), after the stages above: the largest
  MMR weight whose lists keep `keep` (default 0.95) of the NDCG@10 of the model's order.

`StagePlan.hold_out` says what the model may train on; `StagePlan.fit` fits the stages once
the model is trained and returns them typed (generate/stages.py), with what each fit measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from directrec.data.dataset import Catalog, Interactions
from directrec.data.histories import Histories
from directrec.data.split import leave_one_out
from directrec.generate.pipeline import ranked
from directrec.generate.rerank import mmr, normalised
from directrec.generate.stages import Diversify, Stages
from directrec.models.base import Recommender

# Each stage's parameters and their defaults (a recipe may set these, nothing else).
STAGE_PARAMS: dict[str, dict[str, Any]] = {
    "prior_blend": {"users": 500},
    "query_blend": {"users": 500},
    "cold_gate": {"holdout": 0.1, "min_warm": 0.95},
    "diversify": {"users": 2000, "keep": 0.95},
}
DIVERSITY_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_ITEMS = 12  # a held-out user's history: long enough to cut at 1, 2, 3, 5, 10 and score


def check_stage_params(stages: Mapping[str, Mapping[str, Any]], where: str = "recipe") -> None:
    """Refuse unknown stages and parameters, naming the closest valid ones."""
    import difflib

    for name, params in stages.items():
        if name not in STAGE_PARAMS:
            near = difflib.get_close_matches(name, STAGE_PARAMS, n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ValueError(
                f"{where}: unknown stage {name!r}{hint}; stages: {', '.join(STAGE_PARAMS)}"
            )
        for key in params:
            if key not in STAGE_PARAMS[name]:
                valid = STAGE_PARAMS[name]
                near = difflib.get_close_matches(key, valid, n=3)
                hint = f" (did you mean {', '.join(near)}?)" if near else ""
                raise ValueError(
                    f"{where}: stage {name!r} has no parameter {key!r}{hint}; "
                    f"it takes {', '.join(valid)}"
                )


@dataclass
class StagePlan:
    """The stages to fit and their parameters, and what was held out for them."""

    stages: dict[str, dict[str, Any]]
    seed: int = 42
    held_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def from_spec(cls, spec: Mapping[str, Mapping[str, Any]], seed: int = 42) -> StagePlan:
        check_stage_params(spec)
        return cls({n: {**STAGE_PARAMS[n], **dict(p)} for n, p in spec.items()}, seed)

    def hold_out(self, data: Interactions, model: Recommender) -> Interactions:
        """What the model trains on: `data` less the held-out users' and items' rows."""
        rng = np.random.default_rng(self.seed)
        keep = np.ones(len(data.user), dtype=bool)
        users = max(
            (
                int(self.stages[n]["users"])
                for n in ("prior_blend", "query_blend")
                if n in self.stages
            ),
            default=0,
        )
        if users > 0:
            eligible = np.flatnonzero(data.history_lengths() >= MIN_ITEMS)
            if len(eligible) < 20:
                raise ValueError(
                    f"stages prior_blend/query_blend: {len(eligible)} users have "
                    f"{MIN_ITEMS} or more items; at least 20 are needed"
                )
            n = min(users, len(eligible) // 2)  # never more than half of such users
            self.held_users = np.sort(rng.choice(eligible, n, replace=False))
            keep &= ~np.isin(data.user, self.held_users)
        if "cold_gate" in self.stages:
            if not model.capabilities.cold_items:
                raise ValueError(f"stage cold_gate: {model.name} has no cold-item path")
            share = float(self.stages["cold_gate"]["holdout"])
            if not 0.0 < share < 0.5:
                raise ValueError(f"stage cold_gate: holdout must be in (0, 0.5), not {share}")
            warm = np.flatnonzero(np.bincount(data.item, minlength=data.n_items) > 0)
            self.cold_items = np.sort(rng.choice(warm, round(share * len(warm)), replace=False))
            keep &= ~np.isin(data.item, self.cold_items)
        return data if keep.all() else data.select(keep)

    def fit(
        self,
        model: Recommender,
        data: Interactions,
        catalog: Catalog,
        holdout: str,
        log: Callable[[str], None] = lambda _: None,
    ) -> Stages:
        """Fit the planned stages on `data` (everything, before `hold_out`) for the trained
        `model`. `holdout` is the model's: `loo` keeps every user's last item out of what
        the stages learn from, as it was kept out of the model."""
        made: dict[str, Any] = {}
        fits: dict[str, Any] = {}
        if holdout == "loo":  # the stages never see the test items either
            data = leave_one_out(data).stage("test")[0]
        seqs = data.sequences()
        if "prior_blend" in self.stages:
            from directrec.generate.coldstart import fit_prior_blend

            stage, table = fit_prior_blend(model, [seqs[u] for u in self.held_users])
            made["prior_blend"], fits["prior_blend"] = (
                stage,
                table | {"held_out_users": len(self.held_users)},
            )
            if stage is not None:
                shown = ", ".join(
                    f"{n}: {a:g}" for n, a in zip(stage.lengths, stage.alpha, strict=True)
                )
                log(f"prior_blend (popularity weight by history length): {shown}")
        if "query_blend" in self.stages:
            made["query_blend"], fits["query_blend"] = self._fit_query(model, seqs, catalog, log)
        if "cold_gate" in self.stages:
            made["cold_gate"], fits["cold_gate"] = self._fit_gate(model, data, log)
        if "diversify" in self.stages:
            made["diversify"], fits["diversify"] = self._fit_diversify(
                model, data, catalog, Stages(**made), log
            )
        return Stages(**made, fits=fits)

    def _validation_cases(self, data: Interactions) -> tuple[Interactions, np.ndarray, np.ndarray]:
        """Every (not held-out) user's last item of `data` as the target: the items before
        the targets, the users with one, and each one's target."""
        users = np.setdiff1d(np.unique(data.user), self.held_users)
        split = leave_one_out(data.select(np.isin(data.user, users)))
        before, _, targets = split.stage("test")
        has = np.diff(targets.indptr) > 0
        return before, targets.users[has], targets.items[targets.indptr[:-1]][has]

    def _fit_diversify(
        self,
        model: Recommender,
        data: Interactions,
        catalog: Catalog,
        stages: Stages,
        log: Callable[[str], None],
    ) -> tuple[Diversify, dict]:
        if catalog.embeddings is None:
            raise ValueError("stage diversify: the catalogue needs item text (MMR compares it)")
        before, users, target = self._validation_cases(data)
        hist = Histories.from_interactions(before, users)
        n = int(self.stages["diversify"]["users"])
        if len(target) > n:
            rows = np.sort(np.random.default_rng(self.seed).choice(len(target), n, replace=False))
            hist, target = hist.take(rows), target[rows]
        stage, table = fit_diversify(
            model,
            hist,
            target,
            catalog.embeddings,
            keep=float(self.stages["diversify"]["keep"]),
            stages=stages,
        )
        log(
            f"diversify: MMR weight {stage.weight:g} (validation NDCG@10 "
            f"{table['ndcg_model_order']:.4f} → {table['ndcg_chosen']:.4f}, intra-list "
            f"diversity {table['ild_model_order']:.3f} → {table['ild_chosen']:.3f}, "
            f"{table['cases']} cases)"
        )
        return stage, table

    def _fit_query(
        self, model: Recommender, seqs: list, catalog: Catalog, log: Callable[[str], None]
    ) -> tuple[Any, dict]:
        from directrec.generate.coldstart import fit_query_blend, sentence_cases

        if not any(catalog.categories) or catalog.embeddings is None:
            raise ValueError("stage query_blend: the catalogue needs categories and item text")
        _, hists, sims, by_category, truth = sentence_cases(
            [seqs[u] for u in self.held_users], catalog.categories, catalog.embeddings
        )
        stage, q = fit_query_blend(model, hists, sims, truth, category_sims=by_category)
        log(
            f"query_blend: alpha {q['alpha']:g}, t {q['t']:g}, category weight {q['w']:g} "
            f"(Recall@10 {q['recall_model']:.4f} → {q['recall_blend']:.4f} on {q['cases']} requests)"
        )
        return stage, q

    def _fit_gate(
        self, model: Recommender, data: Interactions, log: Callable[[str], None]
    ) -> tuple[Any, dict]:
        """Validation cases: every (not held-out) user's last item as the target, the items
        before it (warm ones only, as the model saw them) as the history."""
        from directrec.generate.coldstart import fit_cold_gate

        before, users, target = self._validation_cases(data)
        warm = before.select(~np.isin(before.item, self.cold_items))
        hist = Histories.from_interactions(warm, users)
        gate, table = fit_cold_gate(
            model, hist, target, k=10, min_warm=float(self.stages["cold_gate"]["min_warm"])
        )
        table = {k: v for k, v in table.items() if k != "gate"} | {
            "held_out_items": len(self.cold_items)
        }
        if gate is None:
            log("cold_gate: no gate beat the model without one on cold recall; none is kept")
        else:
            log(
                f"cold_gate: {gate.mode} gate, view {gate.view}; valid cold Recall@10 "
                f"{table['valid_cold_recall_without']:.4f} → {table['valid_cold_recall']:.4f} "
                f"({table['cold_cases']} cold cases, warm NDCG kept at "
                f"{table['valid_warm_retention']:.1%})"
            )
        return gate, table


def mmr_sweep(
    model: Recommender,
    histories: Histories,
    truths: list[set[int]],
    vectors: np.ndarray,
    knobs: list[float] | tuple[float, ...],
    k: int = 10,
    pool: int = 50,
    *,
    seen: sp.csr_matrix | None = None,
    stages: Stages | None = None,
    batch_size: int = 512,
) -> list[dict[str, float]]:
    """Per MMR weight in `knobs`: recall@k, ndcg@k and intra-list diversity (mean pairwise
    cosine distance) of each row's re-ranked list against `truths[row]`, over the rows
    with a truth. The pool is the row's top `pool` unseen items over the whole catalogue
    (with the fitted `stages`; `seen` rows, when given, are masked too)."""
    vectors = normalised(vectors)
    sums = {kn: np.zeros(3) for kn in knobs}
    count = 0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for b in range(0, len(histories), batch_size):
        rows = np.arange(b, min(b + batch_size, len(histories)))
        h = histories.take(rows)
        hidden = None if seen is None else seen[rows]
        found = ranked(model, h, pool, hidden=hidden, stages=stages).head(pool)
        cand, vals = found.items.numpy(), found.scores.numpy()
        for n, row in enumerate(rows):
            truth = truths[row]
            if not truth:
                continue
            count += 1
            ok = np.isfinite(vals[n])
            ideal = discount[: min(len(truth), k)].sum()
            for kn in knobs:
                items, _ = mmr(cand[n][ok], vals[n][ok], vectors, k, kn)
                hit = np.array([i in truth for i in items], dtype=np.float64)
                v = vectors[items]
                m = len(items)
                ild = float((1 - v @ v.T)[np.triu_indices(m, 1)].mean()) if m > 1 else 0.0
                sums[kn] += (
                    hit.sum() / min(len(truth), k),
                    (hit * discount[:m]).sum() / ideal,
                    ild,
                )
    return [
        {
            "diversity": kn,
            f"recall@{k}": float(s[0] / max(count, 1)),
            f"ndcg@{k}": float(s[1] / max(count, 1)),
            f"ild@{k}": float(s[2] / max(count, 1)),
            "users": count,
        }
        for kn, s in sums.items()
    ]


def fit_diversify(
    model: Recommender,
    histories: Histories,
    target: np.ndarray,
    vectors: np.ndarray,
    keep: float = 0.95,
    *,
    k: int = 10,
    pool_factor: int = 5,
    stages: Stages | None = None,
    grid: tuple[float, ...] = DIVERSITY_GRID,
) -> tuple[Diversify, dict[str, Any]]:
    """The largest MMR weight of `grid` whose lists keep `keep` of the NDCG@`k` of the
    model's own order on these validation cases (row r's target: `target[r]`), and the
    sweep it was chosen from."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"stage diversify: keep must be in (0, 1], not {keep}")
    truths = [{int(t)} for t in target]
    sweep = mmr_sweep(model, histories, truths, vectors, grid, k, k * pool_factor, stages=stages)
    base = sweep[0][f"ndcg@{k}"]
    kept = [p for p in sweep if p[f"ndcg@{k}"] >= keep * base]
    chosen = max(kept, key=lambda p: p["diversity"])
    table = {
        "cases": len(truths),
        "keep": keep,
        "weight": chosen["diversity"],
        "ndcg_model_order": base,
        "ndcg_chosen": chosen[f"ndcg@{k}"],
        "ild_model_order": sweep[0][f"ild@{k}"],
        "ild_chosen": chosen[f"ild@{k}"],
        "sweep": sweep,
    }
    return Diversify(float(chosen["diversity"]), pool_factor), table
