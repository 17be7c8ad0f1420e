"""Cold-start benchmarks, written as JSON with the exact command, data, split and seed.

items — TIGER's protocol: hold 5 % of the items out of training entirely (their
    interactions are removed); they keep their text. Report Recall@10 / NDCG@10 on the
    leave-one-out test cases whose target is such an item, for the semantic-ID generator
    and for a text-similarity baseline (content), full ranking over all items.
users — hold 10 % of the users out of training; each is shown with only their first 1–2
    items (or a sentence made from the genres of their first items) and must find their
    next 10 items. Generator (sasrec-ce) against popularity. The trained model is saved
    (it also serves the explanation and service benchmarks).

    python bench/coldstart.py items --db out/bench/beauty.duckdb --max-history 20 --minutes 15
    python bench/coldstart.py users --db out/bench/ml1m.duckdb --minutes 10 --save out/bench/models/ml1m-sasrec-ce
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from directrec.data.dataset import Dataset
from directrec.data.histories import Histories
from directrec.data.split import Targets, leave_one_out
from directrec.evaluate.protocol import evaluate, validator
from directrec.generate.pipeline import ListOptions, recommend
from directrec.models import create, load_model


def parse_set(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def subset_targets(t: Targets, keep: np.ndarray) -> Targets:
    """The targets rows (users) where `keep` is true (single-target leave-one-out)."""
    rows = np.flatnonzero(keep)
    counts = np.diff(t.indptr)[rows]
    items = (
        np.concatenate([t.items[t.indptr[r] : t.indptr[r + 1]] for r in rows])
        if len(rows)
        else np.zeros(0, np.int64)
    )
    return Targets(t.users[rows], np.concatenate([[0], np.cumsum(counts)]), items)


def warm_ndcg_without_cold(model, inputs, targets: Targets, cold: np.ndarray, k: int = 10) -> float:
    """NDCG@k on one-target cases when the model may never write a cold item (their
    scores set to -inf): the same weights without any way for cold items into a list."""
    import torch

    from directrec.evaluate.metrics import ranking_metrics, target_ranks
    from directrec.generate.pipeline import mask_rows, masked_scores

    seen, ndcg = inputs.matrix("binary"), []
    for b in range(0, len(targets), 1024):
        users = targets.users[b : b + 1024]
        t = torch.from_numpy(targets.items[targets.indptr[:-1][b : b + 1024]]).unsqueeze(1)
        scores = masked_scores(model, Histories.from_interactions(inputs, users), k)
        mask_rows(scores, seen[users])
        scores[:, torch.from_numpy(cold)] = -torch.inf
        ranks = target_ranks(scores, t)
        ndcg.append(ranking_metrics(ranks, torch.ones(len(t)), k)["ndcg"])
    return float(torch.cat(ndcg).mean()) if ndcg else 0.0


def rank_among_cold(model, hist: Histories, targets: np.ndarray) -> dict:
    """Diagnostic (reported, never used to choose): on the cold test cases, the share whose
    target is in the top 1, 2, 3, 5, 10 of the model's cold items alone, by each view."""
    import torch

    items, logp = model.generate(hist)
    # columns of `cold_similarity` follow the model's own cold items (every item without
    # training interactions: the held-out ones and any seen only as a target)
    model_cold = model.cold_items()
    assert np.isin(targets, model_cold).all(), "a held-out target the model trained on"
    col = torch.from_numpy(np.searchsorted(model_cold, targets))
    views = [("latent", 0.0), ("text", 0.0)]
    if getattr(model.net, "id_loss", 0.0) > 0:
        views += [("id", 0.0), ("id", 0.5)]
    out = {}
    for view, mix in views:
        if view == "text" and getattr(model, "text_vectors", None) is None:
            continue
        sims = model.cold_similarity(hist, items, logp, mix, view)
        rank = (sims > sims.gather(1, col.unsqueeze(1))).sum(1)
        out[f"{view} mix={mix:g}"] = {
            f"top{k}": round(float((rank < k).float().mean()), 4) for k in (1, 2, 3, 5, 10)
        }
    return out


def items_protocol(args: argparse.Namespace) -> dict:
    ds = Dataset.from_store(args.db)
    from directrec.text.encoder import item_embeddings

    ds.catalog.embeddings = item_embeddings(ds, args.db)
    rng = np.random.default_rng(args.seed)
    n = ds.interactions.n_items
    cold = np.sort(rng.choice(n, round(args.holdout * n), replace=False))
    split = leave_one_out(ds.interactions)
    fit, hist, test = split.stage("test", args.max_history)
    v_fit, v_hist, v_targets = split.stage("valid", args.max_history)
    warm = lambda d: d.select(~np.isin(d.item, cold))  # noqa: E731
    first_target = test.items[test.indptr[:-1]]
    cold_cases = np.isin(first_target, cold) & (np.diff(test.indptr) > 0)
    res: dict = {
        "cold_items": len(cold),
        "test_cases": len(test),
        "cold_test_cases": int(cold_cases.sum()),
    }
    runs = {
        "semantic-id": {
            "max_len": args.max_history or 50,
            "max_minutes": args.minutes,
            "eval_every": 2,
            **parse_set(args.set),
        },
        "content": {},
    }
    for name, settings in runs.items():
        t = time.time()
        model = create(name, {"seed": args.seed, **settings})
        if name == "semantic-id" and args.load:  # trained by an earlier --save run
            model = load_model(args.load)
            model.meta.pop("cold_gate", None)
            res["loaded_from"] = str(args.load)
            settings = {k: getattr(model.config, k) for k in settings}
        elif model.capabilities.early_stopping:
            warm_valid = v_targets
            keep = ~np.isin(v_targets.items[v_targets.indptr[:-1]], cold)
            warm_valid = subset_targets(v_targets, keep & (np.diff(v_targets.indptr) > 0))
            model.fit(
                warm(v_fit),
                ds.catalog,
                validator=validator(warm(v_fit), warm_valid, seen=warm(v_hist), max_users=2000),
            )
        else:
            model.fit(warm(fit), ds.catalog)
        fit_s = time.time() - t
        if name == "semantic-id" and args.save and not args.load:
            model.save(args.save)
        inputs = warm(hist)  # every user's warm history (train + validation) as the input
        warm_cases = ~cold_cases & (np.diff(test.indptr) > 0)

        def measure(model=model, inputs=inputs, warm_cases=warm_cases) -> dict:
            cold_r = evaluate(model, inputs, subset_targets(test, cold_cases), (10, 20))
            warm_r = evaluate(model, inputs, subset_targets(test, warm_cases), (10,))
            cold_m, warm_m = cold_r.metrics, warm_r.metrics
            n_c, n_w = cold_r.n_users, warm_r.n_users  # the two partition the test cases
            all_m = {
                k: (cold_m[k] * n_c + warm_m[k] * n_w) / max(n_c + n_w, 1)
                for k in ("recall@10", "ndcg@10")
            }
            return {
                "cold_targets": {k: cold_m[k] for k in ("recall@10", "ndcg@10", "recall@20")},
                "warm_targets": {k: warm_m[k] for k in ("recall@10", "ndcg@10")},
                "all_targets": {k: all_m[k] for k in ("recall@10", "ndcg@10")},
            }

        res[name] = {
            "settings": settings,
            "fit_seconds": None if name == "semantic-id" and args.load else round(fit_s, 1),
            **measure(),
            "best_epoch": model.meta.get("best_epoch"),
        }
        if name == "semantic-id":
            # The cold gate (generate/coldstart.fit_cold_gate), learned on validation cases:
            # warm validation histories, targets warm or cold; nothing chosen on test.
            from directrec.generate.coldstart import fit_cold_gate

            keep = np.diff(v_targets.indptr) > 0
            vt = subset_targets(v_targets, keep)
            t = time.time()
            gate = fit_cold_gate(
                model,
                Histories.from_interactions(warm(v_hist), vt.users),
                vt.items[vt.indptr[:-1]],
                k=10,
                min_warm=args.min_warm,
            )
            res[name]["without_gate"] = {
                k: res[name][k] for k in ("cold_targets", "warm_targets", "all_targets")
            }
            # the strictest reference: the same model never writing a cold item at all
            res[name]["warm_ndcg_cold_banned"] = warm_ndcg_without_cold(
                model, inputs, subset_targets(test, warm_cases), cold
            )
            res[name]["cold_gate"] = gate | {"fit_seconds": round(time.time() - t, 1)}
            res[name].update(measure())
            w0 = res[name]["without_gate"]["warm_targets"]["ndcg@10"]
            res[name]["warm_ndcg_retention"] = (
                res[name]["warm_targets"]["ndcg@10"] / w0 if w0 else None
            )
            wb = res[name]["warm_ndcg_cold_banned"]
            res[name]["warm_ndcg_retention_vs_banned"] = (
                res[name]["warm_targets"]["ndcg@10"] / wb if wb else None
            )
            res[name]["cold_rank_among_cold"] = rank_among_cold(
                model,
                Histories.from_interactions(inputs, test.users[cold_cases]),
                first_target[cold_cases],
            )
            res[name]["codes"] = model.meta.get("codes")
            # how often does the generator write a cold item at all?
            users = test.users[:2000]
            lists = recommend(model, Histories.from_interactions(inputs, users), ListOptions(k=10))
            items = np.array(
                [np.pad(r.items, (0, 10 - len(r.items)), constant_values=-1) for r in lists]
            )
            res[name]["share_of_cold_items_in_top10"] = float(np.isin(items, cold).mean())
            seen = warm(hist).matrix("binary")
            bad = (items < 0) | (items >= model.n_items)
            rows = np.repeat(np.arange(len(users)), 10)
            bad |= (
                np.asarray(seen[users[rows], np.clip(items.ravel(), 0, None)]).ravel() > 0
            ).reshape(items.shape)
            res[name]["invalid_or_seen_rate_top10"] = float(bad.mean())
        print(name, json.dumps(res[name]), file=sys.stderr)
    return res


def users_protocol(args: argparse.Namespace) -> dict:
    ds = Dataset.from_store(args.db)
    data = ds.interactions
    rng = np.random.default_rng(args.seed)
    lengths = data.history_lengths()
    eligible = np.flatnonzero(lengths >= 12)
    held = np.sort(rng.choice(eligible, round(args.holdout_users * data.n_users), replace=False))
    train = data.select(~np.isin(data.user, held))
    split = leave_one_out(train)
    v_fit, v_hist, v_targets = split.stage("valid")
    settings = {
        "max_len": 200,
        "loss": "sampled",
        "negatives": 2048,
        "bf16": True,
        "lr": 2e-3,
        "batch_size": 64,
        "max_minutes": args.minutes,
        "eval_every": 2,
        **parse_set(args.set),
    }
    t = time.time()
    model = create("sasrec-ce", {"seed": args.seed, **settings})
    model.fit(v_fit, validator=validator(v_fit, v_targets, seen=v_hist, max_users=2000))
    fit_s = time.time() - t
    if args.save:
        model.meta.update(
            user_ids=ds.users.ids.tolist(),
            item_ids=ds.items.ids.tolist(),
            data_fingerprint=ds.fingerprint,
            db=str(args.db),
            note="trained without the users in held_out_users",
        )
    pop_order = np.argsort(-np.bincount(train.item, minlength=data.n_items), kind="stable")
    seqs = data.sequences()
    cats = ds.catalog.categories
    from directrec.text.encoder import item_embeddings

    ds.catalog.embeddings = item_embeddings(ds, args.db)
    out: dict = {
        "held_out_users": len(held),
        "fit_seconds": round(fit_s, 1),
        "settings": settings,
        "best_epoch": model.meta.get("best_epoch"),
        "best_valid_ndcg@10": model.meta.get("best_valid_ndcg@10"),
    }
    # Half the held-out users tune the popularity blend per history length (validation),
    # the other half measure it (test); neither half was trained on.
    from directrec.generate.coldstart import fit_prior_blend

    tune, test = held[::2], held[1::2]
    out["blend"] = fit_prior_blend(model, [seqs[u] for u in tune])
    out["tune_users"], out["test_users"] = len(tune), len(test)
    blend = model.meta["prior_blend"]

    def recall(lists: list, truth: list[set]) -> float:
        return float(np.mean([len(set(g) & t) / 10 for g, t in zip(lists, truth, strict=True)]))

    def lists(hists: list, blended: bool, exclude_seen: bool = True) -> list:
        if not blended:
            model.meta.pop("prior_blend", None)
        try:
            h = Histories.from_lists(hists, data.n_items)
            opts = [ListOptions(exclude_seen=exclude_seen) for _ in hists]
            return [r.items for r in recommend(model, h, opts)]
        finally:
            model.meta["prior_blend"] = blend

    out["curve"] = {}
    for shown in (0, 1, 2, 5):
        hists = [seqs[u][:shown] for u in test]
        truth = [set(seqs[u][shown : shown + 10].tolist()) for u in test]
        pop = [[i for i in pop_order[: 10 + shown] if i not in set(h)][:10] for h in hists]
        out["curve"][str(shown)] = {
            "generator_recall@10": recall(lists(hists, False), truth),
            "generator_blended_recall@10": recall(lists(hists, True), truth),
            "popularity_recall@10": recall(pop, truth),
        }
    # A sentence (the categories of the user's first 5 items): its 5 nearest items are the
    # pseudo history; the query prior's weight, temperature and category share are learned
    # on the tune half (first on text cosines alone, as before session 15, then with the
    # category names as a second view).
    from directrec.generate.coldstart import fit_query_blend, sentence_cases, with_categories

    vecs = ds.catalog.embeddings
    _, t_hists, t_sims, t_cat, t_truth = sentence_cases(
        [seqs[u] for u in tune], cats, vecs, args.noun
    )
    sentences, hists, sims, by_cat, truth = sentence_cases(
        [seqs[u] for u in test], cats, vecs, args.noun
    )

    def query_lists(hists: list, sims: np.ndarray) -> list:  # as the service builds them:
        h = Histories.from_lists(hists, data.n_items)  # the pseudo history is not excluded
        opts = [ListOptions(query_sims=q, exclude_seen=False) for q in sims]
        return [r.items for r in recommend(model, h, opts)]

    out["query_blend_text"] = fit_query_blend(model, t_hists, t_sims, t_truth)
    text_only = recall(query_lists(hists, sims), truth)
    text_blend = model.meta["query_blend"]
    out["query_blend"] = fit_query_blend(model, t_hists, t_sims, t_truth, category_sims=t_cat)
    w = model.meta["query_blend"]["w"]
    out["sentence"] = {
        "how": "sentence = the two most frequent categories of the user's first 5 items + "
        f"' {args.noun}'; targets = their items 6-15; the sentence's 5 nearest items (MiniLM) "
        "are the history; the query prior (alpha, t, category share w) is learned on the "
        "tune half",
        "examples": sentences[:5],
        # every sentence row keeps the pseudo history eligible, as the service does
        "generator_recall@10": recall(lists(hists, False, False), truth),
        "generator_blended_recall@10": recall(lists(hists, True, False), truth),
        "generator_query_prior_text_recall@10": text_only,
        "query_blend_text": text_blend,
        "generator_query_prior_recall@10": recall(
            query_lists(hists, with_categories(sims, by_cat, w)), truth
        ),
        "query_blend": model.meta["query_blend"],
        "popularity_recall@10": recall([list(pop_order[:10]) for _ in test], truth),
    }
    if args.save:
        model.save(args.save)  # with the learned blend
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("protocol", choices=["items", "users"])
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("docs/results/coldstart"))
    p.add_argument("--holdout", type=float, default=0.05, help="items: share held out")
    p.add_argument("--holdout-users", type=float, default=0.10, help="users: share held out")
    p.add_argument("--max-history", type=int, default=None)
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--set", action="append", default=[], help="model setting key=value")
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        help="save the trained model here (items: before its gate)",
    )
    p.add_argument(
        "--load",
        type=Path,
        default=None,
        help="items: read the semantic-ID model a --save run trained (same db, seed, holdout) "
        "instead of training it again; its gate is learned afresh",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--min-warm",
        type=float,
        default=0.95,
        help="items: cold gate keeps this share of warm NDCG",
    )
    p.add_argument("--noun", default="movies", help="users: the sentence's noun (products …)")
    p.add_argument("--tag", default="", help="appended to the output file's name")
    args = p.parse_args()
    t = time.time()
    res = {
        "command": " ".join(["python", *sys.argv]),
        "db": str(args.db),
        "seed": args.seed,
        "split": "leave-one-out (items) / held-out users (users); full ranking over all items",
    }
    res |= items_protocol(args) if args.protocol == "items" else users_protocol(args)
    res["bench_seconds"] = round(time.time() - t, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.protocol}-{args.db.stem}{'-' + args.tag if args.tag else ''}.json"
    (args.out / name).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
