"""Benchmark runs: fit and evaluate models on one split of a store, each model in its own
process (by default) so fit time, evaluation time and peak memory are its own.

Top-N task: leave-one-out or temporal split, full ranking (see protocol.py); the test
stage fits on train + validation. Rating task: random or temporal hold-out, RMSE and MAE.

With `seeds` > 1 every model runs once per seed (seed, seed + 1, …); its row reports the
mean over seeds with a 95 % interval, and the best model of each accuracy metric is tested
against the runner-up, paired over users (stats.py).
"""

from __future__ import annotations

import copy
import dataclasses
import multiprocessing as mp
import os
import platform
import resource
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from directrec.data.dataset import Dataset, Interactions
from directrec.data.split import make_split
from directrec.evaluate.protocol import codes_view, evaluate, fit_model
from directrec.evaluate.saved import dataset_facts, stamp
from directrec.evaluate.stats import compare_leaders, mean_interval, ranks_models, user_means
from directrec.progress import stage


@dataclass
class BenchmarkSpec:
    """Everything that defines a run; written verbatim into results.json."""

    db: str
    models: list[str]
    task: str = "topn"  # or "rating"
    split: str = "loo"  # topn: loo | temporal; rating: random | temporal
    ks: list[int] = field(default_factory=lambda: [10, 20])
    max_history: int | None = None  # cap on each user's input context (scoring)
    cap_training: bool = False  # old rule: the cap also deletes older training interactions
    seed: int = 42
    seeds: int = 1  # runs per model: seed, seed + 1, … (each model's own seed shifts alike)
    stage: str = "test"  # topn: evaluate on test (fit train+valid) or valid (fit train)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # model → overrides
    batch_size: int = 1024
    valid_users: int | None = None  # sample of validation users for early stopping
    exclude_seen: bool = True
    progress: bool = False
    diversity: list[float] = field(default_factory=list)  # MMR knob values to sweep (k=10)
    save_dir: str | None = None  # keep each fitted model as <save_dir>/<model> (safetensors)
    # model → its resolved recipe (directrec.recipes.Recipe.to_dict()); default: its defaults
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux' VmHWM is reset by exec, unlike getrusage's ru_maxrss, which a spawned worker
    inherits from its parent; elsewhere ru_maxrss is the best there is."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_for_benchmark(spec: BenchmarkSpec, need_text: bool, features: str = "text") -> Dataset:
    """The store as a Dataset; with `need_text`, its item vectors of `features` (text,
    image or both: the `item_features` setting) from the store's cache or computed."""
    ds = Dataset.from_store(spec.db)
    if need_text:
        from directrec.text.features import item_features

        ds.catalog.embeddings = item_features(ds, spec.db, features, progress=spec.progress)
        ds.catalog.features = features
    return ds


def _settings(spec: BenchmarkSpec, name: str) -> dict[str, Any]:
    s = {"seed": spec.seed, **spec.settings.get(name, {})}
    s.setdefault("progress", spec.progress)  # a run setting every model takes
    return s


def _recipe(spec: BenchmarkSpec, name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The recipe `name` ran by, with the settings it was built with (progress bars aside)."""
    from directrec.recipes import Recipe

    doc = copy.deepcopy(spec.recipes.get(name) or Recipe.plain(name).to_dict())
    doc["settings"] = {k: v for k, v in settings.items() if k != "progress"}
    return doc


def _stage_plan(spec: BenchmarkSpec, name: str) -> Any:
    """The stages `name`'s recipe fits after the model (None: none), on the leave-one-out
    protocol they are fitted by (`directrec train` fits them the same way)."""
    from directrec.generate.fitting import StagePlan

    wanted = (spec.recipes.get(name) or {}).get("stages") or {}
    if not wanted:
        return None
    if spec.split != "loo" or spec.stage != "test":
        raise ValueError(
            f"{name}: the recipe's stages ({', '.join(wanted)}) are fitted on validation "
            "cases of the leave-one-out split; run them with --split loo on the test stage"
        )
    return StagePlan.from_spec(wanted, spec.seed)


def run_topn(spec: BenchmarkSpec, name: str) -> dict[str, Any]:
    """Fit and evaluate one model (runs inside the worker process)."""
    from directrec.models import create

    settings = _settings(spec, name)
    model = create(name, settings)
    features = model.run.item_features
    ds = load_for_benchmark(spec, need_text=True, features=features)
    model.meta["item_features"] = features
    split = make_split(ds.interactions, spec.split)
    _, seen, targets = split.stage(spec.stage, spec.max_history)
    if model.capabilities.needs_text and ds.catalog.embeddings is None:
        return {"model": name, "error": f"needs item {features} features; this store has none"}
    plan = _stage_plan(spec, name)
    # the model trains without what its recipe's stages hold out for their own fit
    fit_split = (
        split if plan is None else make_split(plan.hold_out(ds.interactions, model), spec.split)
    )
    t0 = time.perf_counter()
    # models that train by epochs show their own epoch bar; the others a spinner
    with stage(f"[{name}] fit", on=spec.progress and not model.capabilities.early_stopping):
        inputs = fit_model(
            model,
            fit_split,
            spec.stage,
            ds.catalog,
            max_history=spec.max_history,
            valid_users=spec.valid_users,
            cap_training=spec.cap_training,
        )
    stages = None
    if plan is not None:
        inputs = split.inputs(spec.stage, spec.max_history)  # every user, every item
        with stage(f"[{name}] fit stages", on=spec.progress):
            stages = plan.fit(model, ds.interactions, ds.catalog, "loo")
    fit_s = time.perf_counter() - t0
    model.meta["recipe"] = _recipe(spec, name, settings)
    if spec.save_dir:  # for later looks (other beams, gates) without refitting, and
        # for `directrec evaluate` / `recommend`, which read it against the store by raw id
        stamp(model, ds, spec.db)
        model.save(Path(spec.save_dir) / name, extra=stages.files() if stages else None)
    feats = ds.catalog.embeddings
    if feats is None and any(ds.catalog.categories):
        feats = ds.catalog.category_matrix()
    result = evaluate(
        model,
        inputs,
        targets,
        tuple(spec.ks),
        seen=seen,
        exclude_seen=spec.exclude_seen,
        batch_size=spec.batch_size,
        item_features=feats,
        progress=spec.progress,
        stages=stages,
        item_vectors=ds.catalog.embeddings,
        codes_only=codes_view(model),
    )
    extra = {
        k: model.meta[k]
        for k in (
            "best_epoch",
            "best_valid_ndcg@10",
            "train_log",
            "stopped_by",
            "codes",
            "device",
            "id_weight_valid",
        )
        if k in model.meta
    }
    if stages is not None:
        extra["stages"] = stages.to_dict()
    if spec.diversity and feats is not None:
        from directrec.evaluate.diversity import diversity_sweep

        dense = feats.toarray() if hasattr(feats, "toarray") else feats
        extra["diversity_sweep"] = diversity_sweep(
            model, inputs, seen, targets, dense, spec.diversity, seed=spec.seed
        )
    from directrec.evaluate.report import stopped_text

    return {
        "model": name,
        "config": dataclasses.asdict(model.config),
        "recipe": model.meta["recipe"],
        "run": dataclasses.asdict(model.run),
        **extra,
        "stopped": stopped_text(extra),
        "fit_seconds": round(fit_s, 3),
        "eval_seconds": round(result.seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **result.as_dict(),
        # for the paired tests; run_benchmark takes it out before the document is written
        "per_user": {
            "users": result.users,
            **{k: v for k, v in result.per_user.items() if ranks_models(k)},
        },
    }


def rating_split(
    data: Interactions, kind: str, seed: int, test: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean train/test masks: `random` holds out a random share, `temporal` the latest."""
    if data.rating is None:
        raise ValueError("the rating task needs ratings; this store has none")
    n = len(data)
    if kind == "random":
        test_mask = np.random.default_rng(seed).random(n) < test
    elif kind == "temporal":
        if data.timestamp is None:
            raise ValueError("a temporal rating split needs timestamps")
        test_mask = data.timestamp > np.quantile(data.timestamp, 1 - test)
    else:
        raise ValueError(f"rating split must be random or temporal, not {kind!r}")
    return ~test_mask, test_mask


def run_rating(spec: BenchmarkSpec, name: str) -> dict[str, Any]:
    from directrec.models import RATING_MODELS, create

    if name not in RATING_MODELS:
        return {"model": name, "error": f"not a rating model (rating models: {RATING_MODELS})"}
    ds = load_for_benchmark(spec, need_text=False)
    train_mask, test_mask = rating_split(ds.interactions, spec.split, spec.seed)
    train, test = ds.interactions.select(train_mask), ds.interactions.select(test_mask)
    settings = _settings(spec, name)
    model = create(name, settings)
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = np.clip(
        model.predict(test.user, test.item),
        ds.interactions.rating.min(),
        ds.interactions.rating.max(),
    )
    err = pred - test.rating
    mean_err = test.rating - train.rating.mean()
    return {
        "model": name,
        "config": dataclasses.asdict(model.config),
        "recipe": _recipe(spec, name, settings),
        "run": dataclasses.asdict(model.run),
        "fit_seconds": round(fit_s, 3),
        "eval_seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "metrics": {"rmse": float(np.sqrt((err**2).mean())), "mae": float(np.abs(err).mean())},
        "reference": {"global_mean_rmse": float(np.sqrt((mean_err**2).mean()))},
        "n_train": len(train),
        "n_test": len(test),
    }


def _run(spec: BenchmarkSpec, name: str) -> dict[str, Any]:
    return run_rating(spec, name) if spec.task == "rating" else run_topn(spec, name)


def replicate(spec: BenchmarkSpec, i: int) -> BenchmarkSpec:
    """The spec of a model's `i`-th seed: every seed (the run's and each model's own, from
    its settings) moved by `i`. Only the first seed's models are saved."""
    if i == 0:
        return spec
    settings = {}
    for m in spec.models:
        own = spec.settings.get(m, {})
        settings[m] = {**own, "seed": int(own.get("seed", spec.seed)) + i}
    return dataclasses.replace(spec, seed=spec.seed + i, settings=settings, save_dir=None)


def combine_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's row from its runs, one per seed: the first run's configuration and
    training record, metrics and segments averaged over seeds, an interval per metric,
    and each seed's own figures under `per_seed`. An error in any run is the row."""
    failed = next((r for r in runs if "error" in r), None)
    if failed is not None:
        return failed
    first = runs[0]
    seeds = [r["recipe"]["settings"].get("seed") for r in runs]
    out = dict(first, seeds=seeds)
    out["interval"] = {m: mean_interval([r["metrics"][m] for r in runs]) for m in first["metrics"]}
    if len(runs) == 1:
        return out
    out["metrics"] = {m: iv["mean"] for m, iv in out["interval"].items()}
    if first.get("segments"):
        out["segments"] = {
            label: {
                m: (v if m == "users" else float(np.mean([r["segments"][label][m] for r in runs])))
                for m, v in seg.items()
            }
            for label, seg in first["segments"].items()
        }
    out["fit_seconds"] = round(float(np.mean([r["fit_seconds"] for r in runs])), 3)
    out["eval_seconds"] = round(float(np.mean([r["eval_seconds"] for r in runs])), 3)
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    if "stopped" in first:
        out["stopped"] = " / ".join(dict.fromkeys(r["stopped"] for r in runs))
    keep = ("fit_seconds", "eval_seconds", "peak_rss_mb", "stopped", "best_epoch")
    out["per_seed"] = [
        {"seed": s, "metrics": r["metrics"], **{k: r[k] for k in keep if k in r}}
        for s, r in zip(seeds, runs, strict=True)
    ]
    return out


def _exit_with_parent(parent: int) -> None:
    """In an isolated worker: end it once the benchmark that spawned it is gone (killed by
    a signal it could not pass on), instead of training on, orphaned, for hours."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_benchmark(spec: BenchmarkSpec, isolate: bool = True, log=print) -> dict[str, Any]:
    """Run every model of `spec` (once per seed); returns the results document (see
    report.py)."""
    from directrec.models import MODELS

    if spec.seeds < 1:
        raise ValueError(f"seeds must be at least 1, not {spec.seeds}")
    unknown = [m for m in spec.models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    ds = load_for_benchmark(spec, need_text=spec.task == "topn")  # fills the embedding cache
    wanted = {str(spec.settings.get(m, {}).get("item_features", "text")) for m in spec.models}
    if spec.task == "topn" and wanted - {"text"}:  # and the image cache, before the workers
        from directrec.text.features import item_features

        item_features(ds, spec.db, "both", progress=spec.progress)
    split_info: dict[str, Any] = {"kind": spec.split}
    if spec.task == "topn":
        split = make_split(ds.interactions, spec.split)
        _, _, targets = split.stage(spec.stage, spec.max_history)
        split_info.update(
            train=len(split.train),
            valid=len(split.valid),
            test=len(split.test),
            evaluated_users=len(targets),
        )
    results, per_user = [], {}
    for name in spec.models:
        t0 = time.perf_counter()
        runs, users = [], []
        for i in range(spec.seeds):
            rspec = replicate(spec, i)
            of = f" (seed {rspec.seed}, {i + 1} of {spec.seeds})" if spec.seeds > 1 else ""
            log(f"[{name}] fitting and evaluating{of} …")
            if isolate:
                with ProcessPoolExecutor(
                    1,
                    mp_context=mp.get_context("spawn"),
                    initializer=_exit_with_parent,
                    initargs=(os.getpid(),),
                ) as pool:
                    res = pool.submit(_run, rspec, name).result()
            else:
                res = _run(rspec, name)
            if "per_user" in res:
                users.append(res.pop("per_user"))
            runs.append(res)
            if "error" in res:
                break
            k0 = min(spec.ks)
            keys = (f"hr@{k0}", f"ndcg@{k0}", "rmse", "mae")
            shown = {k: round(v, 4) for k, v in res["metrics"].items() if k in keys}
            stop = f"  {res['stopped']}" if res.get("stopped", "—") != "—" else ""
            log(f"[{name}] {shown}  fit {res['fit_seconds']}s  eval {res['eval_seconds']}s{stop}")
        res = combine_seeds(runs)
        res["wall_seconds"] = round(time.perf_counter() - t0, 3)
        results.append(res)
        if "error" in res:
            log(f"[{name}] skipped: {res['error']}")
        elif users:
            per_user[name] = user_means(users)
    from directrec.evaluate.report import generator_warnings

    doc = {
        "command": " ".join(sys.argv),
        "spec": dataclasses.asdict(spec),
        "dataset": dataset_facts(spec.db, ds),
        "split": split_info,
        "protocol": (
            "full ranking over all items; seen items excluded; test stage fits on train + "
            "validation; ties counted in the target's favour"
            if spec.task == "topn"
            else f"{spec.split} hold-out of 10% of ratings; predictions clipped to the rating range"
        ),
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": _cpus(),
            "accelerator": _accelerator(),
            "isolated_processes": isolate,
        },
        "results": results,
    }
    # the best model of each accuracy metric against the runner-up, paired over users
    ranked_metrics = sorted({m for r in results for m in r.get("metrics", {}) if ranks_models(m)})
    doc["comparisons"] = compare_leaders(results, per_user, ranked_metrics)
    doc["warnings"] = generator_warnings(doc)
    return doc


def _accelerator() -> str:
    """The CUDA device torch sees (name), or 'none'."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def write_results(doc: dict[str, Any], out: str | Path) -> Path:
    """results.json, results.md, comparison.png (plus curve-MODEL.png per trained-by-epoch
    model and diversity.png when a diversity sweep ran) in `out`."""
    import json

    from directrec.evaluate.report import (
        markdown_table,
        plot_comparison,
        plot_diversity,
        plot_training_curve,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / "results.json")
    (out / "results.md").write_text(markdown_table(doc))
    plot_comparison(doc, out / "comparison.png")
    plot_diversity(doc, out / "diversity.png")
    for r in doc["results"]:
        if r.get("train_log"):
            plot_training_curve(
                r["train_log"],
                out / f"curve-{r['model']}.png",
                r["model"],
                r.get("stopped_by"),
                r.get("best_epoch"),
            )
    return out
