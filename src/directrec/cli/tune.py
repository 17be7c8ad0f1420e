"""`directrec tune`: search a model's settings on the validation stage (evaluate/tune.py)
and write the best as a recipe file that `train --recipe` and `benchmark --recipe` take."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from directrec.cli.common import StoreOpt, _run_guarded, app, err, fail, out, parse_settings
from directrec.cli.discover import with_examples
from directrec.progress import terminal_bar


@app.command(
    cls=with_examples(
        "directrec tune ease --db shop.duckdb --trials 30 --out recipes/ease-shop.toml",
        "directrec train --recipe recipes/ease-shop.toml --db shop.duckdb --out models/ease",
        "directrec tune sasrec-ce --db shop.duckdb --trials 20 --set epochs=30 --out sas.toml",
        "directrec tune itemknn --db shop.duckdb --trials 50 --space knn-space.toml --out knn.toml",
    )
)
def tune(
    model_name: Annotated[
        str, typer.Argument(metavar="MODEL", help="the model whose settings to search")
    ],
    db: StoreOpt,
    out_path: Annotated[
        Path, typer.Option("--out", help="the recipe file to write (TOML)", dir_okay=False)
    ],
    trials: Annotated[int, typer.Option(help="settings to try")] = 20,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="the recipe to start from (shipped name or .toml file); default: the "
            "shipped recipe named like MODEL, if any, else MODEL's defaults"
        ),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(
            help="a search-space TOML file: \\[space] SETTING = {low = 1, high = 100, log = "
            "true} or \\[choice, …] (default: the model's built-in space, printed first)"
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="key=value fixed for every trial (e.g. epochs=30)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seeds the sampler (TPE) and every model")] = 42,
    valid_users: Annotated[
        int | None, typer.Option(help="early stopping: sample this many validation users")
    ] = None,
) -> None:
    """Search MODEL's settings with Optuna (TPE, seeded) on the validation stage only:
    each trial fits on the leave-one-out training part and scores NDCG@10 on each user's
    second-to-last item; the test items (each user's last) are never read. The best
    settings are written as a recipe: the starting recipe with them, and a description
    saying the trials, the metric and the data."""
    from directrec import recipes as rcp
    from directrec.data.dataset import Dataset
    from directrec.data.storebase import describe
    from directrec.evaluate import tune as tuning
    from directrec.models import MODELS

    if model_name not in MODELS:
        fail(f"unknown model {model_name!r}{rcp.closest(model_name, MODELS)}")
    base = (
        _run_guarded(rcp.resolve, recipe) if recipe else _run_guarded(rcp.default_for, model_name)
    )
    if base.model != model_name:
        fail(f"recipe {base.name!r} trains {base.model}, not {model_name}")
    fixed = parse_settings(settings, [model_name])[model_name]
    base = _run_guarded(base.with_settings, fixed)
    searched = _run_guarded(
        lambda: tuning.read_space(space, model_name) if space else tuning.default_space(model_name)
    )
    # what --set fixes is not searched
    searched = {k: p for k, p in searched.items() if k not in fixed}
    if not searched:
        fail(f"--set fixes every setting the search would try ({', '.join(fixed)})")
    if trials < 1:
        fail("--trials must be ≥ 1")
    proto = base.benchmark
    max_history = proto.max_history if proto else None
    if valid_users is None and proto is not None:
        valid_users = proto.valid_users
    say = lambda m: err.print(m, highlight=False, markup=False)  # noqa: E731
    # a shipped or file recipe has a source; a model's plain defaults have none
    start = f"the recipe {base.name!r}" if base.source else f"{model_name}'s defaults"
    say(f"searching {model_name}, starting from {start}:")
    for name, p in searched.items():
        say(f"  {name}: {p.describe()}")

    def run() -> tuning.TuneResult:
        ds = Dataset.from_store(db)
        cls = MODELS[model_name]
        if cls.capabilities.needs_text and ds.catalog.embeddings is None:
            from directrec.text.features import item_features

            features = str(base.settings.get("item_features", "text"))
            ds.catalog.embeddings = item_features(ds, db, features)
            ds.catalog.features = features
        with _Progress(trials) as progress:
            return tuning.tune(
                model_name,
                ds,
                searched,
                trials=trials,
                settings=base.settings,
                seed=seed,
                max_history=max_history,
                valid_users=valid_users,
                on_trial=progress.heard,
            )

    # the recipe's folder before the search, not after it: a long search cannot end unwritten
    _run_guarded(out_path.parent.mkdir, parents=True, exist_ok=True)
    result = _run_guarded(run)
    # the seed the trials ran with, so `train --recipe` reproduces the best trial
    tuned = _run_guarded(base.with_settings, {**result.best, "seed": seed}, "tune")
    described = (  # the store as it may be recorded: a URL without its password
        f"{model_name} tuned by `directrec tune` on {describe(db)}: best validation NDCG@10 "
        f"{result.value:.4f}\n"
        f"{trials} Optuna trials (TPE sampler, seed {seed}) searched "
        f"{', '.join(searched)}, starting from {start}. Each trial fit on the "
        f"leave-one-out training part ({result.n_train:,} interactions) and was scored by "
        f"NDCG@10 on {result.n_users:,} users' second-to-last items (full ranking, seen items "
        f"excluded); the test items (each user's last) were not read. Best: trial "
        f"{result.best_trial + 1}."
    )
    made = dataclasses.replace(
        tuned, name=out_path.stem, description=described, measured=None, source=""
    )
    text = made.to_toml()
    _run_guarded(rcp.Recipe.from_text, text, str(out_path))  # what train --recipe will read
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out_path)
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best.items()
    )
    out.print(
        f"best validation NDCG@10 {result.value:.4f} (trial {result.best_trial + 1}): {shown}",
        highlight=False,
        markup=False,
    )
    out.print(
        f"recipe written to {out_path}; `directrec train --recipe {out_path} --db {describe(db)} "
        "--out DIR` trains it",
        highlight=False,
        markup=False,
    )


class _Progress:
    """A bar with the best score so far on a terminal, else one stderr line per trial."""

    def __init__(self, trials: int) -> None:
        self.trials = trials
        self.bar: Any = None
        if sys.stderr.isatty():
            self.bar, self.task = terminal_bar("tune", trials, console=err, start=False)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def heard(self, trial, result) -> None:
        line = (
            f"trial {trial.number + 1}/{self.trials}: NDCG@10 {trial.value:.4f} "
            f"({trial.seconds:.1f} s); best {result.value:.4f} (trial {result.best_trial + 1})"
        )
        if self.bar is not None:
            self.bar.update(self.task, advance=1, info=f"best NDCG@10 {result.value:.4f}")
            self.bar.console.print(line, highlight=False, markup=False)
        else:
            err.print(line, highlight=False, markup=False)
