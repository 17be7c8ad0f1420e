"""The `directrec` command line: ingest, info, benchmark, train, evaluate, recipes,
recommend, generate, publish, serve, token, update, forget.

Bad input exits non-zero with a message naming the file, line and field; nothing is
half-written (see data/store.py and models/base.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console

if TYPE_CHECKING:
    from directrec.recipes import Recipe

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

app = typer.Typer(
    help="directrec: generative recommendation, with honest baselines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def parse_settings(pairs: list[str] | None, models: list[str]) -> dict[str, dict[str, Any]]:
    """`--set key=value` (all models that have the field) or `--set model.key=value`,
    converted to the type of the model's setting; an unknown model or key is refused with
    the closest valid names."""
    from directrec.models import MODELS
    from directrec.recipes import (
        RecipeError,
        closest,
        convert_setting,
        setting_defaults,
        split_pair,
    )

    result: dict[str, dict[str, Any]] = {m: {} for m in models}
    for pair in pairs or []:
        try:
            target, fld, raw = split_pair(pair)
            if target and target not in MODELS:
                fail(f"--set {pair!r}: unknown model {target!r}{closest(target, MODELS)}")
            names = [target] if target else models
            having = [m for m in names if fld in setting_defaults(m)]
            if not having:
                valid = {f for m in names for f in setting_defaults(m)}
                fail(
                    f"--set {pair!r}: no selected model has a setting {fld!r}{closest(fld, valid)}"
                )
            for m in having:
                result.setdefault(m, {})[fld] = convert_setting(m, fld, raw, f"--set {pair!r}")
        except RecipeError as e:
            fail(str(e))
    return result


def stage_note(recipe: Recipe) -> None:
    """Say which of a recipe's learned stages this command leaves unfitted."""
    if recipe.stages:
        err.print(
            f"note: recipe {recipe.name!r} names stages {', '.join(recipe.stages)}: `train` "
            "fits them, `benchmark` reports the model without them (--protocol cold-items and "
            "new-users measure them)",
            highlight=False,
            markup=False,
        )


_DEBUG = {"on": False}


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="print the traceback of an unexpected error")
    ] = False,
) -> None:
    """directrec: generative recommendation, with honest baselines."""
    _DEBUG["on"] = debug


def _run_guarded(fn, *args, **kwargs):
    """Expected user errors: a clean message and exit code 2. Anything else: one line and
    exit code 1 (the traceback with --debug), never a bare traceback."""
    from directrec.data.schema import DataError

    try:
        return fn(*args, **kwargs)
    except (DataError, ValueError, FileNotFoundError) as e:  # DataError names file:line:field
        fail(str(e))
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as e:
        full = _disk_full(e)
        if full is not None:  # an environment fault, not a bug: no traceback hint
            fail(f"disk full: {full}; free some space and rerun", 1)
        if _DEBUG["on"]:
            raise
        fail(f"unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", 1)


def _disk_full(e: BaseException) -> str | None:
    """The one-line reason when `e` (or what caused it) is a full disk or quota: an
    OSError with ENOSPC/EDQUOT, or a DuckDB error whose write failed for lack of space."""
    import errno

    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"no space left on device ({e.filename or 'writing'})"
        text = str(e)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return " ".join(text.split())  # DuckDB's message names the file
        e = e.__cause__ or e.__context__
    return None


# A store: a DuckDB file (the embedded default) or a PostgreSQL URL.
StoreOpt = Annotated[
    str, typer.Option(help="store: a DuckDB file or postgresql://user@host:port/db")
]


# --------------------------------------------------------------------------- ingest
@app.command()
def ingest(
    db: StoreOpt,
    fmt: Annotated[
        str,
        typer.Option("--format", help="movielens | recbole | amazon | sequence | csv | parquet"),
    ] = "csv",
    interactions: Annotated[Path | None, typer.Option(help="interaction file or directory")] = None,
    items: Annotated[Path | None, typer.Option(help="optional item catalogue")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="a bundled dataset instead of files: ml-100k")
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="CSV/Parquet mapping, e.g. user=uid,item=iid,time=ts,rating=r"),
    ] = None,
    item_columns: Annotated[
        str | None, typer.Option(help="catalogue mapping, e.g. id=iid,title=name,categories=genres")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="items missing from the catalogue are errors")
    ] = False,
    append: Annotated[bool, typer.Option(help="add to the store instead of replacing it")] = False,
    min_rating: Annotated[
        float | None, typer.Option(help="implicit conversion: keep ratings ≥ this")
    ] = None,
    kcore: Annotated[int, typer.Option(help="k-core filter on users and items (0 = off)")] = 0,
    dedup: Annotated[str, typer.Option(help="repeated (user, item): first | last | none")] = "none",
) -> None:
    """Read interactions (and a catalogue) into the store, validated, in one transaction."""
    from directrec.data import loaders, preprocess
    from directrec.data.store import describe
    from directrec.data.store import ingest as store_ingest

    def run() -> dict[str, int]:
        nonlocal fmt, interactions, items
        if dataset:
            if dataset != "ml-100k":
                raise ValueError(f"unknown bundled dataset {dataset!r} (have: ml-100k)")
            interactions, items = loaders.bundled_ml100k()
            fmt = "recbole"
        if interactions is None:
            raise ValueError("give --interactions PATH (or --dataset ml-100k)")
        raw = loaders.load(fmt, interactions, items, columns, item_columns)
        n_read = len(raw.interactions)
        df = preprocess.to_implicit(raw.interactions, min_rating)
        df = preprocess.dedup(df, dedup)
        if kcore > 1:
            df = preprocess.kcore(df, kcore)
        raw.interactions = df
        options = {
            "format": fmt,
            "min_rating": min_rating,
            "kcore": kcore,
            "dedup": dedup,
            "interactions": str(interactions),
            "items": str(items) if items else None,
        }
        counts = store_ingest(
            db,
            raw,
            strict=strict,
            append=append,
            options=options,
            items_file=str(items) if items else None,
            interactions_file=str(interactions),
        )
        counts["read"] = n_read
        return counts

    counts = _run_guarded(run)
    out.print(
        f"ingested into {describe(db)}: {counts['interactions']:,} interactions "
        f"({counts['read']:,} read), {counts['users']:,} users, {counts['items']:,} items"
    )


# --------------------------------------------------------------------------- info
@app.command()
def info(db: StoreOpt) -> None:
    """Counts and provenance of a store."""
    from directrec.data.store import open_store

    def run() -> dict:
        with open_store(db) as s:
            return {**s.counts(), **s.meta()}

    out.print_json(json.dumps(_run_guarded(run)))


@app.command()
def forget(
    user: Annotated[str, typer.Option(help="the user to delete")],
    db: StoreOpt,
    feedback: Annotated[
        Path | None, typer.Option(help="feedback log (SQLite); default: beside the store")
    ] = None,
) -> None:
    """Delete a user's interactions and feedback from the store and the feedback log; the
    next `update` no longer learns from them, and a running service drops its caches of
    them (at once through POST /v1/admin/forget, else within its watch interval)."""
    from directrec.data.store import open_store
    from directrec.serve.feedback import feedback_source, open_log

    def run() -> dict[str, int]:
        with open_store(db, read_only=False) as store:
            deleted = store.forget(user)
        log = open_log(feedback_source(db, feedback))
        if log is not None:
            try:
                deleted["feedback_events"] = deleted.get("feedback_events", 0) + log.forget(user)
            finally:
                log.close()
        return deleted

    deleted = _run_guarded(run)
    shown = ", ".join(f"{n} {table}" for table, n in deleted.items())
    out.print(f"forgot user {user!r}: deleted {shown}", highlight=False, markup=False)


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
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="key=value or model.key=value")
    ] = None,
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
        Path | None, typer.Option(help="also save each fitted model under DIR/<model>")
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
        typer.Option(help="cold-items: share of items held out (0.05); new-users: of users (0.1)"),
    ] = None,
) -> None:
    """Fit and evaluate models on one split; write results.json, results.md, comparison.png.
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
    over = parse_settings(settings, names)
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

        if r is not None:  # the generator last: new-users measures it
            names = [m for m in names if m != r.model] + [r.model]
        doc = _run_guarded(
            run_protocol,
            protocol,
            str(db),
            names,
            {m: dict(rec.settings) for m, rec in recipes.items()},
            seed=seed,
            holdout=holdout,
            max_history=max_history,
            valid_users=valid_users,
            log=lambda m: err.print(m, markup=False, highlight=False),
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "results.json").write_text(json.dumps(doc, indent=1))
        (out_dir / "results.md").write_text(protocol_markdown(doc))
        sys.stdout.write(protocol_markdown(doc))
        return
    if r:
        stage_note(r)
    spec = BenchmarkSpec(
        db=str(db),
        models=names,
        task=task,
        split=split,
        ks=ks,
        max_history=max_history,
        cap_training=cap_training,
        seed=seed,
        stage=stage,
        settings={m: dict(rec.settings) for m, rec in recipes.items()},
        exclude_seen=not include_seen,
        progress=progress and sys.stderr.isatty(),
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
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    out.print(f"results written to {out_dir}/results.json, results.md, comparison.png")


def _models() -> dict:
    from directrec.models import MODELS

    return MODELS


# --------------------------------------------------------------------------- train
@app.command()
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
            help="a recipe (shipped name or .toml file); default: the shipped recipe named "
            "like MODEL, if any, else MODEL's defaults"
        ),
    ] = None,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="setting overrides key=value")
    ] = None,
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
    from directrec.data.split import leave_one_out
    from directrec.evaluate.protocol import fit_model
    from directrec.generate.fitting import StagePlan
    from directrec.models import MODELS, create

    if model_name is not None and model_name not in MODELS:
        fail(f"unknown model {model_name!r}{rcp.closest(model_name, MODELS)}")
    if recipe is not None:
        chosen = _run_guarded(rcp.resolve, recipe)
        if model_name is not None and model_name != chosen.model:
            fail(f"recipe {chosen.name!r} trains {chosen.model}, not {model_name}")
    elif model_name is not None:
        chosen = _run_guarded(rcp.default_for, model_name)
    else:
        fail("give MODEL or --recipe NAME|PATH")
    model_name = chosen.model
    # --set over the recipe's settings, then the seed: what the model is built with
    chosen = _run_guarded(chosen.with_settings, parse_settings(settings, [model_name])[model_name])
    chosen = _run_guarded(chosen.with_settings, {"seed": seed, **chosen.settings})
    if valid_users is None and chosen.benchmark is not None:
        valid_users = chosen.benchmark.valid_users

    def run() -> Path:
        if holdout not in ("none", "loo"):
            raise ValueError("--holdout must be none or loo")
        ds = Dataset.from_store(db)
        over = dict(chosen.settings)
        # epoch, loss, validation NDCG and ETA: a bar on a terminal, else a line per epoch
        over.setdefault("progress", True)
        model = create(model_name, over)
        if model.capabilities.needs_text:
            from directrec.text.encoder import item_embeddings

            ds.catalog.embeddings = item_embeddings(ds, db)
        # The stages to fit after the model, and the users and items held out for them.
        spec: dict[str, dict] = {k: dict(v) for k, v in chosen.stages.items()}
        if blend_users > 0:
            spec["prior_blend"] = {"users": blend_users}
            if any(ds.catalog.categories) and any(ds.catalog.titles):
                spec["query_blend"] = {"users": blend_users}
        plan = StagePlan.from_spec(spec, seed)
        if "query_blend" in plan.stages and ds.catalog.embeddings is None:
            from directrec.text.encoder import item_embeddings

            ds.catalog.embeddings = item_embeddings(ds, db)
        data = plan.hold_out(ds.interactions, model)
        # none: deploy on everything (early-stopping models validate on each user's last
        # item); loo: leave each user's last item out, as the benchmark's test stage does.
        fit_model(
            model,
            leave_one_out(data),
            "all" if holdout == "none" else "test",
            ds.catalog,
            valid_users=valid_users,
        )
        say = lambda m: out.print(m, highlight=False, markup=False)  # noqa: E731
        stages = plan.fit(model, ds.interactions, ds.catalog, holdout, log=say)
        from directrec.data.store import open_store
        from directrec.evaluate.saved import stamp

        with open_store(db) as store:
            store_seq = store.last_seq()
        stamp(model, ds, db)
        # watermark: the update gate validates on newer rows only; the recipe says how it
        # was made (an update keeps it: it trains on with the same settings)
        model.meta.update(store_seq=store_seq, holdout=holdout, recipe=chosen.to_dict())
        from directrec.models import distributed

        if not distributed.current().main:  # under torchrun, rank 0 writes the model
            return out_dir
        path = model.save(out_dir, extra=stages.files())
        if model.meta.get("train_log"):
            from directrec.evaluate.report import plot_training_curve

            plot_training_curve(model.meta["train_log"], path / "training_curve.png", model_name)
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
        err.print(f"[yellow]note:[/] {note}", highlight=False)
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
    for name in shipped():
        r = _run_guarded(resolve, name)
        measured = f"{r.measured.figure} — {r.measured.data.split(',')[0]}" if r.measured else "—"
        table.add_row(r.name, r.model, r.summary(), measured)
    out.print(table)


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
    """Print one recipe as TOML: a shipped one, a file, or the one a saved model stores."""
    from directrec.recipes import resolve, stored

    def run() -> str:
        if (ref is None) == (model_dir is None):
            raise ValueError("give a recipe NAME|PATH or --model DIR (one of them)")
        if ref is not None:
            return resolve(ref).to_toml()
        from directrec.serve.registry import resolve as resolve_model

        path = Path(resolve_model(model_dir)[0])
        try:
            meta = json.loads((path / "config.json").read_text()).get("meta", {})
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a directrec model directory ({e})") from None
        return stored(meta, str(path)).to_toml()

    sys.stdout.write(_run_guarded(run))


# --------------------------------------------------------------------------- recommend
@app.command()
def recommend(
    model_dir: Annotated[
        Path, typer.Option("--model", help="a directory written by `train`, or a registry")
    ],
    user: Annotated[str, typer.Option(help="the user's id as in your data")],
    db: StoreOpt,
    k: Annotated[int, typer.Option(min=1, max=10_000)] = 10,
    include_seen: Annotated[bool, typer.Option(help="allow items the user has seen")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain", help="cite the history items behind each item (leave-one-out influence)"
        ),
    ] = False,
    diversity: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="MMR re-ranking over text embeddings")
    ] = 0.0,
) -> None:
    """Top-K recommendations for one user (unknown users get the popularity fallback)."""
    from directrec.data.store import open_store
    from directrec.generate.context import ModelContext
    from directrec.generate.pipeline import ListOptions
    from directrec.generate.pipeline import recommend as build_lists
    from directrec.generate.stages import load_pipeline

    def run() -> dict:
        from directrec.serve.registry import resolve

        model, stages = load_pipeline(resolve(model_dir)[0])
        ctx = ModelContext.build(model, db, vectors=diversity > 0, stages=stages)
        with open_store(db) as store:
            histories = ctx.histories(store, [user])
        options = ListOptions(
            k=k, exclude_seen=not include_seen, diversity=diversity, explain=explain
        )
        (rec,) = build_lists(model, histories, options, info=ctx.info, stages=ctx.stages)
        rows = [
            {
                "rank": r + 1,
                "item_id": ctx.raw([i])[0],
                "title": ctx.info.titles[i],
                "score": float(sc),
            }
            for r, (i, sc) in enumerate(zip(rec.items, rec.scores, strict=True))
        ]
        for row, reason in zip(rows, rec.reasons or [], strict=False):
            row["reason"] = reason.text
            row["evidence"] = ctx.raw(np.asarray(reason.evidence, dtype=np.int64))
        return {"user": user, "model": model.name, "fallback": rec.fallback, "items": rows}

    res = _run_guarded(run)
    if as_json:
        out.print_json(json.dumps(res))
        return
    note = " (unknown or empty history: popularity fallback)" if res["fallback"] else ""
    out.print(f"top-{k} for user {user} from {res['model']}{note}:", highlight=False)
    for r in res["items"]:
        out.print(
            f"{r['rank']:>3}. {r['title'] or r['item_id']}  [{r['score']:.4f}]",
            highlight=False,
            markup=False,
        )
        if r.get("reason"):
            out.print(f"     {r['reason']}", highlight=False, markup=False)


# --------------------------------------------------------------------------- generate
@app.command("generate")
def generate_cmd(
    model_dir: Annotated[
        Path, typer.Option("--model", help="a directory written by `train`, or a registry")
    ],
    db: StoreOpt,
    out_file: Annotated[Path, typer.Option("--out", help="Parquet file to write (atomically)")],
    k: Annotated[int, typer.Option(min=1, max=10_000)] = 10,
    users: Annotated[
        Path | None, typer.Option(help="file with one user id per line (default: every user)")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="users scored per model call")] = 1024,
) -> None:
    """Precompute top-K lists for every (or the listed) user into Parquet, streaming, with
    scores, model version and data fingerprint. Under `torchrun --nproc_per_node N -m
    directrec generate …` each process takes a share of the users and rank 0 merges."""
    from directrec.generate.batch import generate, read_user_file
    from directrec.generate.stages import load_pipeline

    def run() -> dict:
        from directrec.serve.registry import resolve

        path, version = resolve(model_dir)
        model, stages = load_pipeline(path)
        wanted = read_user_file(users) if users is not None else None
        return generate(model, version, db, out_file, k, wanted, batch_size, stages=stages)

    facts = _run_guarded(run)
    if int(os.environ.get("RANK", 0)) == 0:
        out.print(
            f"wrote {out_file}: " + ", ".join(f"{k}={v}" for k, v in facts.items()),
            highlight=False,
            markup=False,
        )


# --------------------------------------------------------------------------- registry
@app.command()
def publish(
    model_dir: Annotated[Path, typer.Option("--model", help="a directory written by `train`")],
    registry_dir: Annotated[Path, typer.Option("--registry", help="registry directory")],
    current: Annotated[bool, typer.Option(help="make it the version to serve")] = True,
    db: Annotated[
        str | None,
        typer.Option(
            help="the store: its forgotten users are checked (default: the model's own store), "
            "and the canary builds lists for its users and records their NDCG@10 (without "
            "it: synthetic histories from the model's own items)"
        ),
    ] = None,
    canary_users: Annotated[
        int, typer.Option(min=1, help="stored users whose lists the canary builds")
    ] = 100,
) -> None:
    """Copy a trained model into a registry as its next version (with a sha256 manifest).
    Users forgotten in the store since the model was trained are checked: a model with
    per-user factors naming one is refused (train it again); others drop those ids. Then
    the canary: the model must load strictly and build full, valid, unseen lists with
    finite scores (serve/canary.py). A refused model exits 2, the registry unchanged."""
    from directrec.serve.canary import CanaryConfig, Refused
    from directrec.serve.registry import publish as do_publish

    def run() -> str:
        forgotten = _forgotten_for(model_dir, db)
        try:
            return do_publish(
                model_dir,
                registry_dir,
                current,
                db,
                CanaryConfig(users=canary_users),
                forgotten=forgotten,
            )
        except Refused as e:  # reported like any bad input: the message, exit 2
            raise ValueError(f"{model_dir}: refused by the canary ({e.reason}): {e}") from e

    version = _run_guarded(run)
    out.print(f"published {model_dir} as {registry_dir}/{version}", highlight=False)


def _forgotten_for(model_dir: Path, db: str | None) -> set[str]:
    """The forgotten-user hashes of `db`, else of the store the model records; a model
    with per-user factors is not published unchecked."""
    from directrec.data.store import is_url, open_store
    from directrec.serve.forgotten import personalises_per_user

    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return set()  # not a model directory: publish says so
    if not isinstance(config, dict):
        return set()  # publish names what is wrong with the file
    source = db or config.get("meta", {}).get("db")
    if source and "***" not in str(source) and (is_url(source) or Path(source).exists()):
        with open_store(source) as store:
            return store.forgotten()
    if personalises_per_user(str(config.get("model"))):
        raise ValueError(
            f"{model_dir}: cannot check this per-user model against forgotten users: its "
            f"store ({source or 'not recorded'}) cannot be opened; give --db"
        )
    return set()


@app.command()
def serve(
    model_dir: Annotated[
        Path, typer.Option("--model", help="a registry (hot swaps) or a model directory")
    ],
    db: StoreOpt,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    feedback: Annotated[
        Path | None, typer.Option(help="feedback log (SQLite); default: beside the store")
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="DIRECTREC_ADMIN_TOKEN",
            help="bearer token for /v1/admin (default: random, printed)",
        ),
    ] = None,
    feedback_token: Annotated[
        str | None,
        typer.Option(
            envvar="DIRECTREC_FEEDBACK_TOKEN",
            help="shared bearer token that may post /v1/feedback for any user (a trusted backend)",
        ),
    ] = None,
    token_key: Annotated[
        str | None,
        typer.Option(
            envvar="DIRECTREC_TOKEN_KEY",
            help="key that signs per-user feedback tokens (`directrec token`): a token "
            "may post events for its own user only",
        ),
    ] = None,
    token_key_file: Annotated[
        Path | None, typer.Option(help="read the token key from this file's first line")
    ] = None,
    open_feedback: Annotated[
        bool,
        typer.Option(
            "--open-feedback",
            help="allow /v1/feedback without any token on a non-loopback --host (anyone "
            "who reaches it can rewrite any user's history)",
        ),
    ] = False,
    header_timeout: Annotated[
        float,
        typer.Option(
            min=0.1, help="seconds a connection has to send a request's headers, then 408"
        ),
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="seconds a request has to send its whole body, then 408; no request holds "
            "a --max-inflight slot before its body is in",
        ),
    ] = 10.0,
    max_inflight: Annotated[
        int, typer.Option(min=1, help="requests in flight before shedding with 503")
    ] = 64,
    max_batch: Annotated[int, typer.Option(min=1, help="requests per model call")] = 32,
    batch_wait_ms: Annotated[
        float, typer.Option(min=0, help="how long a request waits for others to batch with")
    ] = 2.0,
    watch_seconds: Annotated[
        float, typer.Option(min=0, help="poll the registry for a new CURRENT (0: off)")
    ] = 2.0,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0: torch's default)")] = 0,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="server processes sharing the port, the registry and (with PostgreSQL) the "
            "store and feedback log",
        ),
    ] = 1,
    list_cache: Annotated[
        int, typer.Option(min=0, help="finished lists kept per process (0: no list cache)")
    ] = 100_000,
    canary_users: Annotated[
        int,
        typer.Option(
            min=1,
            help="stored users whose lists a version must build before it is swapped in "
            "(fewer for slow models: the LM generates each list)",
        ),
    ] = 100,
    keep_alive: Annotated[
        float,
        typer.Option(
            min=1,
            help="seconds an idle keep-alive connection stays open (longer than clients' "
            "pools keep them, so a reused connection is not closed under a request)",
        ),
    ] = 75.0,
) -> None:
    """Serve recommendations over HTTP (FastAPI + uvicorn); the web page is at `/`.

    Feedback modes: open (no credential; refused on a non-loopback --host without
    --open-feedback), --feedback-token (one shared secret, any user), --token-key
    (per-user tokens from `directrec token`); both token kinds may be set together."""
    import logging

    import uvicorn

    from directrec.serve.app import ServeConfig, create_app
    from directrec.serve.protocol import protocol_with
    from directrec.serve.tokens import check_exposure, read_key

    for name, value in (("--admin-token", admin_token), ("--feedback-token", feedback_token)):
        if value is not None and not value.strip():
            fail(f"{name} must not be empty (leave it out for the default)")
    key = _run_guarded(read_key, token_key, token_key_file)
    _run_guarded(check_exposure, host, feedback_token, key, open_feedback)
    if threads:
        import torch

        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = ServeConfig(
        model=model_dir,
        db=db,
        feedback=feedback,
        admin_token=admin_token,
        feedback_token=feedback_token,
        token_key=key.decode() if key is not None else None,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_inflight=max_inflight,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        watch_seconds=watch_seconds,
        list_cache=list_cache,
        canary_users=canary_users,
    )
    if workers > 1:
        # Every worker builds its own service from the same settings (one admin token for
        # all); uvicorn's supervisor restarts a worker that dies.
        import os
        import secrets

        from directrec.serve.app import CONFIG_ENV, config_to_env

        if cfg.admin_token is None:
            cfg.admin_token = secrets.token_urlsafe(24)
            err.print(
                f"admin token (set DIRECTREC_ADMIN_TOKEN to choose one): {cfg.admin_token}",
                highlight=False,
                markup=False,
            )
        os.environ[CONFIG_ENV] = config_to_env(cfg, threads)
        uvicorn.run(
            "directrec.serve.app:app_from_env",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=keep_alive,
            http=protocol_with(header_timeout),
        )
        return
    application = _run_guarded(create_app, cfg)
    if admin_token is None:
        err.print(
            f"admin token (set DIRECTREC_ADMIN_TOKEN to choose one): "
            f"{application.state.service.admin_token}",
            highlight=False,
            markup=False,
        )
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=keep_alive,
        http=protocol_with(header_timeout),
    )


@app.command()
def token(
    user: Annotated[str, typer.Option(help="the user id the token may post feedback for")],
    expires_in: Annotated[
        float | None,
        typer.Option(min=1, help="seconds the token stays valid (default: until the key changes)"),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(envvar="DIRECTREC_TOKEN_KEY", help="the key `serve --token-key` checks with"),
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option(help="read the key from this file's first line")
    ] = None,
) -> None:
    """Print a token that lets its holder (a browser, an app) post feedback for one user
    only, to a service started with the same --token-key."""
    from directrec.serve.tokens import issue, read_key

    secret = _run_guarded(read_key, key, key_file)
    if secret is None:
        fail("give the key: --key, DIRECTREC_TOKEN_KEY or --key-file")
    out.print(_run_guarded(issue, secret, user, expires_in), highlight=False, markup=False)


@app.command()
def update(
    model_dir: Annotated[
        Path, typer.Option("--model", help="the registry (or model) to start from")
    ],
    db: StoreOpt,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="registry to publish to (default: --model)")
    ] = None,
    feedback: Annotated[
        Path | None, typer.Option(help="feedback log; default: beside the store")
    ] = None,
    epochs: Annotated[int, typer.Option(min=0, help="more epochs (warm-starting models)")] = 3,
    tolerance: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="publish only if validation NDCG@10 is at most this share below the served version's",
        ),
    ] = 0.02,
    min_gate_users: Annotated[
        int, typer.Option(min=0, help="users with unseen interactions needed to compare")
    ] = 20,
) -> None:
    """Update the current model on the store plus feedback received since; publish it as
    the registry's next version (a running service swaps to it) if it validates no worse
    than the served version (within --tolerance), else keep it unpublished and say why."""
    from directrec.serve.feedback import feedback_source
    from directrec.serve.registry import is_registry
    from directrec.serve.update import update_model

    target = out_dir or model_dir
    if out_dir is None and not is_registry(model_dir):
        fail(f"{model_dir} is a model directory, not a registry: give --out REGISTRY")
    version, facts = _run_guarded(
        update_model,
        model_dir,
        db,
        feedback_source(db, feedback),
        target,
        epochs,
        tolerance,
        min_gate_users,
    )
    shown = ", ".join(f"{k}={v}" for k, v in facts.items() if k not in ("reason", "kept_at"))
    if version is None:
        err.print(
            f"not published: {facts['reason']}; the update is kept at {facts['kept_at']} ({shown})",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(1)
    out.print(f"published {target}/{version}: {shown}", highlight=False, markup=False)


if __name__ == "__main__":
    app()
