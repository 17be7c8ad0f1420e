"""The cold-start protocols of `directrec benchmark --protocol`:

`cold-items` (TIGER's): a share of the items is held out of training entirely (their
    interactions are removed; they keep their text). Each model is fitted on the rest
    (models that stop early validate on the warm validation targets), and Recall@10 /
    NDCG@10 are reported on the leave-one-out test cases whose target is a held-out item,
    on the warm cases beside them, and on all. A model with a cold-item path (the
    semantic-ID generator) is reported without and with its `ColdGate` stage, the gate
    fitted on validation cases only.
`new-users`: a share of the users (each with ≥ 12 items) is held out of training; half of
    them tune the `PriorBlend` and `QueryBlend` stages, the other half measure them. Each
    measured user shows only their first 0, 1, 2 or 5 items, or a sentence made from the
    categories of their first 5 items, and must find their next 10 items: the generator
    alone, with the stages, and popularity.

Full ranking over all items; every choice is made on validation cases or on the tuning half.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from directrec.data.dataset import Dataset, Interactions
from directrec.data.histories import Histories
from directrec.data.split import Targets, leave_one_out
from directrec.evaluate.protocol import evaluate, validator
from directrec.evaluate.report import stopped_text
from directrec.generate.fitting import MIN_ITEMS
from directrec.generate.pipeline import ListOptions, recommend
from directrec.generate.stages import Stages
from directrec.models.base import Recommender

Factory = Callable[[str], Recommender]  # model name → a fresh model with its settings


def subset_targets(t: Targets, keep: np.ndarray) -> Targets:
    """The rows (users) of `t` where `keep` holds."""
    rows = np.flatnonzero(keep)
    counts = np.diff(t.indptr)[rows]
    parts = [t.items[t.indptr[r] : t.indptr[r + 1]] for r in rows]
    items = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return Targets(t.users[rows], np.concatenate([[0], np.cumsum(counts)]), items)


def cold_items(
    ds: Dataset,
    models: list[str],
    factory: Factory,
    *,
    holdout: float = 0.05,
    max_history: int | None = None,
    seed: int = 42,
    min_warm: float = 0.95,
    valid_users: int | None = 2000,
    db: Any = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """The cold-items protocol (module doc) for each of `models`; each reads the item
    vectors its `item_features` setting names (cached in the store `db` if given)."""
    from directrec.generate.coldstart import fit_cold_gate

    if not 0.0 < holdout < 0.5:
        raise ValueError(f"--holdout must be in (0, 0.5), not {holdout}")
    rng = np.random.default_rng(seed)
    n = ds.interactions.n_items
    cold = np.sort(rng.choice(n, round(holdout * n), replace=False))
    split = leave_one_out(ds.interactions)
    fit, hist, test = split.stage("test", max_history)
    v_fit, v_hist, v_targets = split.stage("valid", max_history)

    def warm(d: Interactions) -> Interactions:
        return d.select(~np.isin(d.item, cold))

    has_test = np.diff(test.indptr) > 0
    first = test.items[test.indptr[:-1]]
    cold_cases = np.isin(first, cold) & has_test
    warm_cases = ~cold_cases & has_test
    has_valid = np.diff(v_targets.indptr) > 0
    v_first = v_targets.items[v_targets.indptr[:-1]]
    warm_valid = subset_targets(v_targets, ~np.isin(v_first, cold) & has_valid)
    inputs = warm(hist)  # every user's warm history (train + validation) as the input
    out: dict[str, Any] = {
        "holdout": holdout,
        "min_warm": min_warm,
        "cold_items": len(cold),
        "test_cases": int(has_test.sum()),
        "cold_test_cases": int(cold_cases.sum()),
        "models": {},
    }

    def measure(model: Recommender, stages: Stages | None) -> dict[str, Any]:
        c = evaluate(model, inputs, subset_targets(test, cold_cases), (10, 20), stages=stages)
        w = evaluate(model, inputs, subset_targets(test, warm_cases), (10,), stages=stages)
        both = {
            k: (c.metrics[k] * c.n_users + w.metrics[k] * w.n_users) / max(c.n_users + w.n_users, 1)
            for k in ("recall@10", "ndcg@10")
        }
        return {
            "cold_targets": {k: c.metrics[k] for k in ("recall@10", "ndcg@10", "recall@20")},
            "warm_targets": {k: w.metrics[k] for k in ("recall@10", "ndcg@10")},
            "all_targets": both,
        }

    for name in models:
        t0 = time.perf_counter()
        model = factory(name)
        if model.capabilities.needs_text or model.capabilities.cold_items:
            from directrec.text.features import for_model

            for_model(model, ds, db)
        if model.capabilities.needs_text and ds.catalog.embeddings is None:
            raise ValueError(f"{name} needs item {model.run.item_features} features")
        if model.capabilities.early_stopping:
            check = validator(warm(v_fit), warm_valid, seen=warm(v_hist), max_users=valid_users)
            model.fit(warm(v_fit), ds.catalog, validator=check)
        else:
            model.fit(warm(fit), ds.catalog)
        row: dict[str, Any] = {
            "fit_seconds": round(time.perf_counter() - t0, 1),
            "stopped": stopped_text(model.meta),
            "best_epoch": model.meta.get("best_epoch"),
        }
        row |= measure(model, None)
        if model.capabilities.cold_items:
            h = Histories.from_interactions(warm(v_hist), v_targets.users[has_valid])
            gate, table = fit_cold_gate(model, h, v_first[has_valid], k=10, min_warm=min_warm)
            row["cold_gate"] = table
            if gate is not None:
                row["without_gate"] = {k: row[k] for k in ("cold_targets", "warm_targets")}
                row |= measure(model, Stages(cold_gate=gate))
        out["models"][name] = row
        log(
            f"{name}: cold Recall@10 {row['cold_targets']['recall@10']:.4f}, warm NDCG@10 "
            f"{row['warm_targets']['ndcg@10']:.4f}"
        )
    return out


def new_users(
    ds: Dataset,
    model_name: str,
    factory: Factory,
    *,
    holdout_users: float = 0.10,
    seed: int = 42,
    valid_users: int | None = 2000,
    noun: str = "",
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """The new-users protocol (module doc) for the generator `model_name`."""
    from directrec.generate.coldstart import fit_prior_blend, fit_query_blend, sentence_cases

    data = ds.interactions
    rng = np.random.default_rng(seed)
    eligible = np.flatnonzero(data.history_lengths() >= MIN_ITEMS)
    n_held = min(round(holdout_users * data.n_users), len(eligible) // 2)
    if n_held < 20:
        raise ValueError(f"new-users: fewer than 40 users have {MIN_ITEMS} or more items")
    held = np.sort(rng.choice(eligible, n_held, replace=False))
    train = data.select(~np.isin(data.user, held))
    v_fit, v_hist, v_targets = leave_one_out(train).stage("valid")
    model = factory(model_name)
    t0 = time.perf_counter()
    check = validator(v_fit, v_targets, seen=v_hist, max_users=valid_users)
    model.fit(v_fit, ds.catalog, validator=check if model.capabilities.early_stopping else None)
    seqs = data.sequences()
    tune, test = held[::2], held[1::2]
    prior, table = fit_prior_blend(model, [seqs[u] for u in tune])
    out: dict[str, Any] = {
        "model": model_name,
        "held_out_users": len(held),
        "tune_users": len(tune),
        "test_users": len(test),
        "fit_seconds": round(time.perf_counter() - t0, 1),
        "stopped": stopped_text(model.meta),
        "best_epoch": model.meta.get("best_epoch"),
        "prior_blend": table,
        "curve": {},
    }
    pop_order = np.argsort(-np.bincount(train.item, minlength=data.n_items), kind="stable")

    def recall(lists: list, truth: list[set]) -> float:
        hits = [
            len(set(np.asarray(g).tolist()) & t) / 10 for g, t in zip(lists, truth, strict=True)
        ]
        return float(np.mean(hits)) if hits else 0.0

    def lists(hists: list, stages: Stages, options: list[ListOptions] | None = None) -> list:
        h = Histories.from_lists(hists, data.n_items)
        opts = options or [ListOptions() for _ in hists]
        return [r.items for r in recommend(model, h, opts, stages=stages)]

    with_prior = Stages(prior_blend=prior)
    for shown in (0, 1, 2, 5):
        hists = [seqs[u][:shown] for u in test]
        truth = [set(seqs[u][shown : shown + 10].tolist()) for u in test]
        pop = [[i for i in pop_order[: 10 + shown] if i not in set(h)][:10] for h in hists]
        out["curve"][str(shown)] = {
            "generator_recall@10": recall(lists(hists, Stages()), truth),
            "generator_with_stages_recall@10": recall(lists(hists, with_prior), truth),
            "popularity_recall@10": recall(pop, truth),
        }
    if any(ds.catalog.categories) and ds.catalog.embeddings is not None:
        from directrec.generate.coldstart import with_categories

        vecs, cats = ds.catalog.embeddings, ds.catalog.categories
        _, t_h, t_s, t_c, t_truth = sentence_cases([seqs[u] for u in tune], cats, vecs, noun)
        sentences, hists, sims, by_cat, truth = sentence_cases(
            [seqs[u] for u in test], cats, vecs, noun
        )
        query, q_table = fit_query_blend(model, t_h, t_s, t_truth, category_sims=t_c)
        both = Stages(prior_blend=prior, query_blend=query)
        mixed = with_categories(sims, by_cat, query.w)  # as the service mixes them
        # the sentence's pseudo history stays eligible, as the service keeps it
        plain = [ListOptions(exclude_seen=False) for _ in hists]
        asked = [ListOptions(exclude_seen=False, query_sims=q) for q in mixed]
        out["sentence"] = {
            "examples": sentences[:5],
            "query_blend": q_table,
            "generator_recall@10": recall(lists(hists, Stages(), plain), truth),
            "generator_with_stages_recall@10": recall(lists(hists, both, asked), truth),
            "popularity_recall@10": recall([pop_order[:10]] * len(hists), truth),
        }
    for shown, row in out["curve"].items():
        log(
            f"{shown} items: generator {row['generator_recall@10']:.4f}, with stages "
            f"{row['generator_with_stages_recall@10']:.4f}, popularity "
            f"{row['popularity_recall@10']:.4f} (Recall@10)"
        )
    return out


def run_protocol(
    protocol: str,
    db: str,
    models: list[str],
    settings: dict[str, dict[str, Any]],
    *,
    seed: int = 42,
    holdout: float | None = None,
    min_warm: float = 0.95,
    max_history: int | None = None,
    valid_users: int | None = 2000,
    noun: str = "",
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """`directrec benchmark --protocol cold-items | new-users` as a results document with
    the exact command, data, seed and machine. `models[-1]` is the generator new-users
    measures; cold-items measures every model."""
    import platform
    import sys

    from directrec.evaluate.benchmark import _cpus
    from directrec.evaluate.saved import dataset_facts
    from directrec.models import MODELS, create

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    ds = Dataset.from_store(db)
    if ds.catalog.has_text:
        from directrec.text.encoder import item_embeddings

        ds.catalog.embeddings = item_embeddings(ds, db)

    def factory(name: str) -> Recommender:
        return create(name, {"seed": seed, **settings.get(name, {})})

    t0 = time.perf_counter()
    if protocol == "cold-items":
        body = cold_items(
            ds,
            models,
            factory,
            holdout=0.05 if holdout is None else holdout,
            min_warm=min_warm,
            max_history=max_history,
            db=db,
            seed=seed,
            valid_users=valid_users,
            log=log,
        )
    elif protocol == "new-users":
        body = new_users(
            ds,
            models[-1],
            factory,
            holdout_users=0.10 if holdout is None else holdout,
            seed=seed,
            valid_users=valid_users,
            noun=noun,
            log=log,
        )
    else:
        raise ValueError(f"--protocol must be standard, cold-items or new-users, not {protocol!r}")
    return {
        "command": " ".join(sys.argv),
        "protocol": protocol,
        "dataset": dataset_facts(db, ds),
        "seed": seed,
        "max_history": max_history,
        "settings": {m: settings.get(m, {}) for m in models},
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": _cpus(),
        },
        "seconds": round(time.perf_counter() - t0, 1),
        **body,
    }


def protocol_markdown(doc: dict[str, Any]) -> str:
    """The protocol's headline table in Markdown."""
    lines = [f"# {doc['protocol']} on {doc['dataset']['db']}", ""]
    if doc["protocol"] == "cold-items":
        lines += [
            f"{doc['cold_items']} items held out of training ({doc['holdout']:.0%}); "
            f"{doc['cold_test_cases']} of {doc['test_cases']} test cases have one as the target.",
            "",
            "| model | cold Recall@10 | cold NDCG@10 | warm NDCG@10 | all NDCG@10 | gate | stopped |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in doc["models"].items():
            gate = "fitted" if "without_gate" in r else ("none kept" if "cold_gate" in r else "—")
            c, w, a = r["cold_targets"], r["warm_targets"], r["all_targets"]
            lines.append(
                f"| {name} | {c['recall@10']:.4f} | {c['ndcg@10']:.4f} | {w['ndcg@10']:.4f} "
                f"| {a['ndcg@10']:.4f} | {gate} | {r.get('stopped', '—')} |"
            )
            if "without_gate" in r:
                b = r["without_gate"]
                lines.append(
                    f"| {name} without its gate | {b['cold_targets']['recall@10']:.4f} "
                    f"| {b['cold_targets']['ndcg@10']:.4f} | {b['warm_targets']['ndcg@10']:.4f} "
                    "| | | |"
                )
    else:
        lines += [
            f"{doc['model']}: {doc['test_users']} held-out users measured, "
            f"{doc['tune_users']} tuned the stages. Recall@10 of their next 10 items. "
            f"Training: {doc.get('stopped', '—')}.",
            "",
            "| shown | generator | with stages | popularity |",
            "|---|---|---|---|",
        ]
        rows = [(f"{n} items", r) for n, r in doc["curve"].items()]
        if "sentence" in doc:
            rows.append(("a sentence", doc["sentence"]))
        for label, r in rows:
            lines.append(
                f"| {label} | {r['generator_recall@10']:.4f} | "
                f"{r['generator_with_stages_recall@10']:.4f} | {r['popularity_recall@10']:.4f} |"
            )
    return "\n".join(lines) + "\n"
