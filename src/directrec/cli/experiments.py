"""Commands that make and measure models: benchmark, train, evaluate, recipes."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

if TYPE_CHECKING:
    from directrec.recipes import Recipe

from directrec.cli.common import (
    BudgetOpt,
    StoreOpt,
    _run_guarded,
    app,
    err,
    fail,
    out,
    parse_settings,
    saved_config,
    with_budget,
)
from directrec.cli.discover import with_examples


# --------------------------------------------------------------------------- benchmark
@app.command()
def benchmark(
    db: StoreOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="directory for results.json/.md/.png")],
    models: Annotated[
        str | None,
        typer.Option(
            help="comma-separated model names (default pop,itemknn,ease; with --recipe: the "
            "recipe's anchors, and the recipe's model is always run)"
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="a recipe (shipped name or .toml file): its model, settings, protocol"),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="topn: loo | temporal; rating: random | temporal (default: loo/random)"),
    ] = None,
    k: Annotated[str | None, typer.Option(help="cut-offs, e.g. 10,20 (default 10,20)")] = None,
    task: Annotated[str, typer.Option(help="topn | rating")] = "topn",
    max_history: Annotated[
        int | None, typer.Option(help="models read each user's last N items (input context)")
    ] = None,
    cap_training: Annotated[
        bool, typer.Option(help="old rule: --max-history also deletes older training data")
    ] = False,
    stage: Annotated[str, typer.Option(help="test (fit train+valid) | valid (fit train)")] = "test",
    seed: Annotated[int, typer.Option()] = 42,
    seeds: Annotated[
        int,
        typer.Option(
            help="run each model with N seeds (--seed, --seed + 1, …): mean ± 95 % interval, "
            "and the best model per metric tested against the runner-up, paired over users"
        ),
    ] = 1,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="key=value or model.key=value")
    ] = None,
    max_minutes: BudgetOpt = None,
    include_seen: Annotated[bool, typer.Option(help="do not exclude seen items")] = False,
    valid_users: Annotated[
        int | None, typer.Option(help="early stopping: sample this many validation users")
    ] = None,
    isolate: Annotated[
        bool, typer.Option(help="one process per model (honest peak memory)")
    ] = True,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
    diversity_sweep: Annotated[
        str | None,
        typer.Option(
            help="MMR knob values, e.g. 0,0.3,0.6,0.9: accuracy–diversity curve (diversity.png)"
        ),
    ] = None,
    save_models: Annotated[
        Path | None,
        typer.Option(help="also save each fitted model under DIR/<model> (the first seed's)"),
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="standard | cold-items (items held out of training; the cold gate) | "
            "new-users (held-out users with 0-5 items or a sentence; the learned priors)"
        ),
    ] = "standard",
    holdout: Annotated[
        float | None,
        typer.Option(
            help="cold-items: share of items held out (the recipe's cold_gate holdout, else "
            "0.05); new-users: of users (0.1)"
        ),
    ] = None,
) -> None:
    """Fit and evaluate models on one split; write results.json, results.md, comparison.png.
    results.md marks the best model per accuracy metric, whether its lead over the
    runner-up is significant (paired t-test over users), and gives per-history-length
    tables; --seeds N repeats every model with N seeds and reports mean ± 95 % interval.
    With --recipe, the recipe's protocol (anchors, split, k, history cap, validation users)
    fills what the command line leaves out, and --set overrides its settings.
    --protocol cold-items / new-users run the cold-start protocols instead (results.json
    and results.md): every model under cold-items, the recipe's (or the last) model under
    new-users."""
    from directrec.evaluate.benchmark import BenchmarkSpec, run_benchmark, write_results
    from directrec.recipes import Protocol, Recipe, resolve

    r = _run_guarded(resolve, recipe) if recipe else None
    proto = (r.benchmark or Protocol()) if r else None
    if models is not None:
        names = [m.strip() for m in models.split(",") if m.strip()]
    else:
        names = list(proto.models) if proto else ["pop", "itemknn", "ease"]
    if r and r.model not in names:
        names.append(r.model)
    if task not in ("topn", "rating"):
        fail("--task must be topn or rating")
    if seeds < 1:
        fail(f"--seeds must be at least 1, not {seeds}")
    if seeds > 1 and protocol != "standard":
        fail("--seeds applies to the standard protocol, not --protocol " + protocol)
    split = split or (proto.split if proto else "loo")
    k = k or (",".join(map(str, proto.k)) if proto else "10,20")
    if proto:
        max_history = max_history if max_history is not None else proto.max_history
        valid_users = valid_users if valid_users is not None else proto.valid_users
    try:
        ks = sorted({int(x) for x in k.split(",")})
    except ValueError:
        fail(f"--k {k!r}: expected comma-separated integers")
    if not ks or ks[0] < 1:
        fail("--k values must be ≥ 1")
    if split == "loo" and task == "rating":
        split = "random"
    try:
        knobs = [float(x) for x in diversity_sweep.split(",")] if diversity_sweep else []
    except ValueError:
        fail(f"--diversity-sweep {diversity_sweep!r}: expected numbers like 0,0.5,0.9")
    if any(not 0 <= x <= 1 for x in knobs):
        fail("--diversity-sweep values must lie in [0, 1]")
    over = parse_settings(with_budget(settings, max_minutes, names), names)
    # Each model's settings: the recipe's (its model; the protocol's for anchors), then --set.
    recipes: dict[str, Recipe] = {}
    for m in names:
        if m not in _models():
            continue  # run_benchmark refuses unknown names, all of them at once
        if r and m == r.model:
            base = r
        else:
            base = Recipe.plain(m)
            if proto and m in proto.settings:
                base = _run_guarded(base.with_settings, proto.settings[m], r.source)
        recipes[m] = _run_guarded(base.with_settings, {"seed": seed, **over.get(m, {})})
    if protocol != "standard":
        from directrec.evaluate.coldstart import protocol_markdown, run_protocol
        from directrec.generate.fitting import STAGE_PARAMS

        if r is not None:  # the generator last: new-users measures it
            names = [m for m in names if m != r.model] + [r.model]
        # cold-items holds items out and fits the cold gate as the recipe's stage says
        gate = r.stages.get("cold_gate") if r is not None else None
        gate = None if gate is None else STAGE_PARAMS["cold_gate"] | gate
        if gate is not None and holdout is None and protocol == "cold-items":
            holdout = float(gate["holdout"])
        doc = _run_guarded(
            run_protocol,
            protocol,
            str(db),
            names,
            {m: dict(rec.settings) for m, rec in recipes.items()},
            seed=seed,
            holdout=holdout,
            min_warm=float((gate or STAGE_PARAMS["cold_gate"])["min_warm"]),
            max_history=max_history,
            valid_users=valid_users,
            log=lambda m: err.print(m, markup=False, highlight=False),
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.json").write_text(json.dumps(doc, indent=1))
        (out_dir / "results.md").write_text(protocol_markdown(doc))
        sys.stdout.write(protocol_markdown(doc))
        return
    spec = BenchmarkSpec(
        db=str(db),
        models=names,
        task=task,
        split=split,
        ks=ks,
        max_history=max_history,
        cap_training=cap_training,
        seed=seed,
        seeds=seeds,
        stage=stage,
        settings={m: dict(rec.settings) for m, rec in recipes.items()},
        exclude_seen=not include_seen,
        progress=progress,  # a bar on a terminal, else a log line per step
        valid_users=valid_users,
        diversity=knobs,
        save_dir=str(save_models) if save_models else None,
        recipes={m: rec.to_dict() for m, rec in recipes.items()},
    )
    doc = _run_guarded(
        run_benchmark,
        spec,
        isolate=isolate,
        log=lambda m: err.print(m, markup=False, highlight=False),
    )
    write_results(doc, out_dir)
    from directrec.evaluate.report import markdown_table

    sys.stdout.write(markdown_table(doc))
    for warning in doc.get("warnings", []):
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    out.print(f"results written to {out_dir}/results.json, results.md, comparison.png")


def _models() -> dict:
    from directrec.models import MODELS

    return MODELS


# --------------------------------------------------------------------------- train
@app.command(
    cls=with_examples(
        "directrec train ease --db shop.duckdb --out models/ease --set l2=300",
        "directrec train --recipe ml1m-sasrec-ce --db ml1m.duckdb --out models/sas",
        "directrec train --recipe best.toml --db shop.duckdb --out models/best  # from `tune`",
        settings_of_model=True,
    )
)
def train(
    db: StoreOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="model directory to write")],
    model_name: Annotated[
        str | None,
        typer.Argument(
            metavar="[MODEL]", help="e.g. ease, als, sasrec-ce (default: the recipe's model)"
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="a recipe (shipped name or .toml file); default: the shipped recipe for "
            "MODEL that fits the data's size, else the one named like MODEL, else MODEL's "
            "defaults"
        ),
    ] = None,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="setting overrides key=value")
    ] = None,
    max_minutes: BudgetOpt = None,
    holdout: Annotated[
        str, typer.Option(help="none: fit on all data | loo: leave each user's last item out")
    ] = "none",
    seed: Annotated[int, typer.Option()] = 42,
    valid_users: Annotated[
        int | None, typer.Option(help="early stopping: sample this many validation users")
    ] = None,
    blend_users: Annotated[
        int,
        typer.Option(
            help="new users: hold this many users (≥ 12 items each) out of the fit and learn "
            "on them how much popularity to blend into lists from 1, 2, 3, 5 and 10 items"
        ),
    ] = 0,
) -> None:
    """Fit one model on the store and save it (safetensors + JSON, plus training_curve.png
    for models that train by epochs with early stopping). The model stores the resolved
    recipe (`directrec recipes show --model DIR` prints it)."""
    from directrec import recipes as rcp
    from directrec.data.dataset import Dataset
    from directrec.evaluate.protocol import fit_with_stages
    from directrec.models import MODELS, create

    if model_name is not None and model_name not in MODELS:
        fail(f"unknown model {model_name!r}{rcp.closest(model_name, MODELS)}")
    if recipe is not None:
        chosen = _run_guarded(rcp.resolve, recipe)
        if model_name is not None and model_name != chosen.model:
            fail(f"recipe {chosen.name!r} trains {chosen.model}, not {model_name}")
    elif model_name is None:
        fail("give MODEL or --recipe NAME|PATH")
    ds = _run_guarded(Dataset.from_store, db)
    if recipe is None:
        shape = rcp.DataShape.of(ds.interactions)
        chosen = _run_guarded(rcp.default_for, model_name, shape)
        if chosen.fits is not None:
            out.print(
                f"recipe {chosen.name} (chosen for {shape.interactions:,} interactions, "
                f"{shape.mean_history:.0f} a user; --recipe {model_name} for the defaults)",
                highlight=False,
                markup=False,
            )
    model_name = chosen.model
    # the recipe's settings, then --seed, then --set: what the model is built with
    sets = with_budget(settings, max_minutes, [model_name])
    over = {"seed": seed, **parse_settings(sets, [model_name])[model_name]}
    chosen = _run_guarded(chosen.with_settings, over)
    if valid_users is None and chosen.benchmark is not None:
        valid_users = chosen.benchmark.valid_users

    def run() -> Path:
        if holdout not in ("none", "loo"):
            raise ValueError("--holdout must be none or loo")
        over = dict(chosen.settings)
        # epoch, loss, validation NDCG and ETA: a bar on a terminal, else a line per epoch
        over.setdefault("progress", True)
        model = create(model_name, over)
        # The stages to fit after the model, and the users and items held out for them.
        spec: dict[str, dict] = {k: dict(v) for k, v in chosen.stages.items()}
        if blend_users > 0:
            spec["prior_blend"] = {"users": blend_users}
            if any(ds.catalog.categories) and any(ds.catalog.titles):
                spec["query_blend"] = {"users": blend_users}
        say = lambda m: out.print(m, highlight=False, markup=False)  # noqa: E731
        stages = fit_with_stages(
            model, ds, spec, holdout, seed=seed, db=db, valid_users=valid_users, log=say
        )
        from directrec.data.store import open_store
        from directrec.evaluate.saved import stamp

        with open_store(db) as store:
            store_seq = store.last_seq()
        stamp(model, ds, db)
        # watermark: the update gate validates on newer rows only; the recipe says how it
        # was made (an update keeps it: it trains on with the same settings)
        # the recipe as run: --blend-users adds its stages to the recipe's own
        made = dataclasses.replace(chosen, stages=spec)
        model.meta.update(store_seq=store_seq, holdout=holdout, recipe=made.to_dict())
        from directrec.models import distributed

        if not distributed.current().main:  # under torchrun, rank 0 writes the model
            return out_dir
        path = model.save(out_dir, extra=stages.files())
        if model.meta.get("train_log"):
            from directrec.evaluate.report import plot_training_curve

            plot_training_curve(
                model.meta["train_log"],
                path / "training_curve.png",
                model_name,
                model.meta.get("stopped_by"),
                model.meta.get("best_epoch"),
            )
        return path

    path = _run_guarded(run)
    if int(os.environ.get("RANK", 0)) == 0:
        out.print(f"saved {model_name} to {path}")
        saved = json.loads((Path(path) / "config.json").read_text())
        meta = saved.get("meta", {})
        if meta.get("stopped_by") == "time budget":
            budget = saved["config"]["max_minutes"]
            out.print(
                f"training stopped at its {budget:g}-minute budget after epoch "
                f"{len(meta.get('train_log', []))} (best validated epoch {meta.get('best_epoch')}); "
                "--set max_minutes=N trains longer, 0 until early stopping",
                highlight=False,
                markup=False,
            )


# --------------------------------------------------------------------------- evaluate
@app.command("evaluate")
def evaluate_cmd(
    model_dir: Annotated[
        Path, typer.Option("--model", help="a directory written by `train`, or a registry")
    ],
    db: StoreOpt,
    recipe: Annotated[
        str | None,
        typer.Option(help="a recipe whose protocol (split, k, history cap) gives the defaults"),
    ] = None,
    split: Annotated[str | None, typer.Option(help="loo | temporal (default loo)")] = None,
    stage: Annotated[str, typer.Option(help="test | valid")] = "test",
    k: Annotated[str | None, typer.Option(help="cut-offs, e.g. 10,20 (default 10,20)")] = None,
    max_history: Annotated[int | None, typer.Option(help="keep each user's last N items")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="write results.json/.md here")
    ] = None,
) -> None:
    """Evaluate a saved model without refitting it (full ranking, the benchmark's split)."""
    from directrec.evaluate.report import markdown_table
    from directrec.evaluate.saved import evaluate_saved
    from directrec.generate.stages import load_pipeline

    def run() -> dict:
        from directrec.recipes import Protocol
        from directrec.recipes import resolve as recipe_named
        from directrec.serve.registry import resolve

        nonlocal split, k, max_history
        proto = (recipe_named(recipe).benchmark or Protocol()) if recipe else Protocol()
        split = split or proto.split
        k = k or ",".join(map(str, proto.k))
        max_history = max_history if max_history is not None else proto.max_history
        try:
            ks = tuple(sorted({int(x) for x in k.split(",")}))
        except ValueError:
            raise ValueError(f"--k {k!r}: expected comma-separated integers") from None
        if not ks or ks[0] < 1:
            raise ValueError("--k values must be ≥ 1")
        model, stages = load_pipeline(resolve(model_dir)[0])
        return evaluate_saved(
            model, db, split=split, stage=stage, ks=ks, max_history=max_history, stages=stages
        )

    doc = _run_guarded(run)
    for note in doc["notes"]:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / "results.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(out_dir / "results.json")
        (out_dir / "results.md").write_text(markdown_table(doc))
    sys.stdout.write(markdown_table(doc))


# --------------------------------------------------------------------------- recipes
recipes_app = typer.Typer(
    help="Recipes: typed, versioned TOML files saying how a model is made (list, show).",
    pretty_exceptions_enable=False,
)
app.add_typer(recipes_app, name="recipes")


@recipes_app.callback(invoke_without_command=True)
def recipes_main(ctx: typer.Context) -> None:
    """List the shipped recipes (`recipes show NAME|PATH` prints one)."""
    if ctx.invoked_subcommand is None:
        recipes_list()


@recipes_app.command("list")
def recipes_list() -> None:
    """The shipped recipes: name, model, what it is, what it was measured to give."""
    from rich.table import Table

    from directrec.recipes import resolve, shipped

    table = Table(show_lines=False)
    table.add_column("recipe", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("what", overflow="fold")
    table.add_column("measured", overflow="fold")
    commands = []
    for name in shipped():
        r = _run_guarded(resolve, name)
        measured = f"{r.measured.figure} — {r.measured.data.split(',')[0]}" if r.measured else "—"
        table.add_row(r.name, r.model, r.summary(), measured)
        if r.measured:
            commands.append(f"  {r.name}: {r.measured.command}")
    out.print(table)
    if commands:  # unwrapped, so a command can be copied as it is
        out.print("The commands behind the measured figures:", *commands, sep="\n", soft_wrap=True)


@recipes_app.command("show")
def recipes_show(
    ref: Annotated[
        str | None, typer.Argument(metavar="[NAME|PATH]", help="a shipped recipe or a file")
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option("--model", help="a model directory (or registry): the recipe it was made by"),
    ] = None,
) -> None:
    """Print one recipe as TOML: a shipped one, a file, or the one a saved model stores
    (comment lines add what the fit decided: the ε and δ DP-SGD spent, the hybrid's ID
    weight chosen on validation)."""
    from directrec.recipes import resolve, stored

    def run() -> str:
        if (ref is None) == (model_dir is None):
            raise ValueError("give a recipe NAME|PATH or --model DIR (one of them)")
        if ref is not None:
            return resolve(ref).to_toml()
        path, config = saved_config(model_dir)
        meta = config.get("meta", {})
        text = stored(meta, str(path)).to_toml()
        if isinstance(meta.get("dp"), dict):  # what DP-SGD spent: a comment, so still a recipe
            from directrec.models.privacy import epsilon_text

            text += f"\n# differential privacy: {epsilon_text(meta['dp'])}\n"
        if isinstance(meta.get("id_weight_valid"), dict):  # the hybrid's weight, fitted
            by_weight = ", ".join(f"{w}: {v}" for w, v in meta["id_weight_valid"].items())
            text += (
                f"\n# chosen on validation by the fit: id_weight = "
                f"{config['config']['id_weight']} (validation NDCG@10 by weight: {by_weight})\n"
            )
        return text

    sys.stdout.write(_run_guarded(run))
