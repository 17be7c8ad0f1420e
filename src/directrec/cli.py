"""The `directrec` command line: ingest, info, benchmark, train, recommend, publish,
serve, update.

Bad input exits non-zero with a message naming the file, line and field; nothing is
half-written (see data/store.py and models/base.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

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
    converted to the type of the model config's field."""
    from directrec.models import MODELS

    result: dict[str, dict[str, Any]] = {m: {} for m in models}
    for pair in pairs or []:
        if "=" not in pair:
            fail(f"--set {pair!r}: expected key=value or model.key=value")
        key, raw = pair.split("=", 1)
        target, _, fld = key.rpartition(".")
        if target and target not in MODELS:
            fail(f"--set {pair!r}: unknown model {target!r}")
        matched = False
        for m in [target] if target else models:
            fields = MODELS[m].setting_fields()
            if fld not in fields:
                continue
            default = fields[fld].default
            try:
                if isinstance(default, bool):
                    if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(raw)
                    val: Any = raw.lower() in ("true", "1", "yes")
                elif isinstance(default, int):
                    val = int(raw)
                elif isinstance(default, float):
                    val = float(raw)
                else:
                    val = raw
            except ValueError:
                fail(f"--set {pair!r}: {fld} takes a {type(default).__name__}")
            result.setdefault(m, {})[fld] = val
            matched = True
        if not matched:
            fail(f"--set {pair!r}: no selected model has a setting {fld!r}")
    return result


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
        if _DEBUG["on"]:
            raise
        fail(f"unexpected {type(e).__name__}: {e} (rerun with --debug for the traceback)", 1)


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
    models: Annotated[str, typer.Option(help="comma-separated model names")] = "pop,itemknn,ease",
    split: Annotated[
        str, typer.Option(help="topn: loo | temporal; rating: random | temporal")
    ] = "loo",
    k: Annotated[str, typer.Option(help="cut-offs, e.g. 10,20")] = "10,20",
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
) -> None:
    """Fit and evaluate models on one split; write results.json, results.md, comparison.png."""
    from directrec.evaluate.benchmark import BenchmarkSpec, run_benchmark, write_results

    names = [m.strip() for m in models.split(",") if m.strip()]
    if task not in ("topn", "rating"):
        fail("--task must be topn or rating")
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
        settings=parse_settings(settings, names),
        exclude_seen=not include_seen,
        progress=progress and sys.stderr.isatty(),
        valid_users=valid_users,
        diversity=knobs,
        save_dir=str(save_models) if save_models else None,
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
    out.print(f"results written to {out_dir}/results.json, results.md, comparison.png")


# --------------------------------------------------------------------------- train
@app.command()
def train(
    model_name: Annotated[str, typer.Argument(metavar="MODEL", help="e.g. ease, als, multvae")],
    db: StoreOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="model directory to write")],
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="config overrides key=value")
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
    for models that train by epochs with early stopping)."""
    from directrec.data.dataset import Dataset
    from directrec.data.split import leave_one_out
    from directrec.evaluate.protocol import fit_model
    from directrec.models import MODELS, create

    def run() -> Path:
        if holdout not in ("none", "loo"):
            raise ValueError("--holdout must be none or loo")
        ds = Dataset.from_store(db)
        over = {"seed": seed, **parse_settings(settings, [model_name]).get(model_name, {})}
        over.setdefault("progress", sys.stderr.isatty())  # epoch, loss, validation NDCG
        model = create(model_name, over)
        if model.capabilities.needs_text:
            from directrec.text.encoder import item_embeddings

            ds.catalog.embeddings = item_embeddings(ds, db)
        # none: deploy on everything (early-stopping models validate on each user's last
        # item); loo: leave each user's last item out, as the benchmark's test stage does.
        data, held = ds.interactions, np.zeros(0, dtype=np.int64)
        if blend_users > 0:  # users the model never trains on, to learn the new-user blend
            eligible = np.flatnonzero(data.history_lengths() >= 12)
            if len(eligible) < 20:
                raise ValueError("--blend-users: fewer than 20 users have 12 or more items")
            n = min(blend_users, len(eligible) // 2)
            held = np.sort(np.random.default_rng(seed).choice(eligible, n, replace=False))
            data = data.select(~np.isin(data.user, held))
        split = leave_one_out(data)
        fit_model(
            model,
            split,
            "all" if holdout == "none" else "test",
            ds.catalog,
            valid_users=valid_users,
        )
        if len(held):
            from directrec.generate.coldstart import fit_prior_blend

            seqs = ds.interactions.sequences()
            table = fit_prior_blend(model, [seqs[u] for u in held])
            model.meta["prior_blend_fit"] = table | {"held_out_users": len(held)}
            out.print(
                "new-user blend (popularity weight by history length): "
                + ", ".join(
                    f"{n}: {a:g}" for n, a in zip(table["lengths"], table["alpha"], strict=True)
                ),
                highlight=False,
                markup=False,
            )
            if any(ds.catalog.categories) and any(ds.catalog.titles):
                # requests typed as a sentence: learn the query prior on the same users
                from directrec.generate.coldstart import fit_query_blend, sentence_cases
                from directrec.text.encoder import item_embeddings

                vecs = ds.catalog.embeddings
                if vecs is None:
                    vecs = item_embeddings(ds, db)
                _, hists, sims, by_category, truth = sentence_cases(
                    [seqs[u] for u in held], ds.catalog.categories, vecs
                )
                q = fit_query_blend(model, hists, sims, truth, category_sims=by_category)
                model.meta["query_blend_fit"] = q
                out.print(
                    f"sentence-request prior: alpha {q['alpha']:g}, t {q['t']:g}, category "
                    f"weight {q['w']:g} (Recall@10 "
                    f"{q['recall_model']:.4f} → {q['recall_blend']:.4f} on {q['cases']} requests)",
                    highlight=False,
                    markup=False,
                )
        from directrec.data.store import open_store
        from directrec.evaluate.saved import stamp

        with open_store(db) as store:
            store_seq = store.last_seq()
        stamp(model, ds, db)
        # watermark: the update gate validates on newer rows only
        model.meta.update(store_seq=store_seq, holdout=holdout)
        from directrec.models import distributed

        if not distributed.current().main:  # under torchrun, rank 0 writes the model
            return out_dir
        path = model.save(out_dir)
        if model.meta.get("train_log"):
            from directrec.evaluate.report import plot_training_curve

            plot_training_curve(model.meta["train_log"], path / "training_curve.png", model_name)
        return path

    if model_name not in MODELS:
        fail(f"unknown model {model_name!r}; choose from {', '.join(MODELS)}")
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
    split: Annotated[str, typer.Option(help="loo | temporal")] = "loo",
    stage: Annotated[str, typer.Option(help="test | valid")] = "test",
    k: Annotated[str, typer.Option(help="cut-offs, e.g. 10,20")] = "10,20",
    max_history: Annotated[int | None, typer.Option(help="keep each user's last N items")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="write results.json/.md here")
    ] = None,
) -> None:
    """Evaluate a saved model without refitting it (full ranking, the benchmark's split)."""
    from directrec.evaluate.report import markdown_table
    from directrec.evaluate.saved import evaluate_saved
    from directrec.models import load_model

    def run() -> dict:
        from directrec.serve.registry import resolve

        try:
            ks = tuple(sorted({int(x) for x in k.split(",")}))
        except ValueError:
            raise ValueError(f"--k {k!r}: expected comma-separated integers") from None
        if not ks or ks[0] < 1:
            raise ValueError("--k values must be ≥ 1")
        model = load_model(resolve(model_dir)[0])
        return evaluate_saved(model, db, split=split, stage=stage, ks=ks, max_history=max_history)

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
    from directrec.models import load_model

    def run() -> dict:
        from directrec.serve.registry import resolve

        model = load_model(resolve(model_dir)[0])
        ctx = ModelContext.build(model, db, vectors=diversity > 0)
        with open_store(db) as store:
            histories = ctx.histories(store, [user])
        options = ListOptions(
            k=k, exclude_seen=not include_seen, diversity=diversity, explain=explain
        )
        (rec,) = build_lists(model, histories, options, info=ctx.info)
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
    from directrec.models import load_model

    def run() -> dict:
        from directrec.serve.registry import resolve

        path, version = resolve(model_dir)
        model = load_model(path)
        wanted = read_user_file(users) if users is not None else None
        return generate(model, version, db, out_file, k, wanted, batch_size)

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
) -> None:
    """Copy a trained model into a registry as its next version (with a sha256 manifest)."""
    from directrec.serve.registry import publish as do_publish

    version = _run_guarded(do_publish, model_dir, registry_dir, current)
    out.print(f"published {model_dir} as {registry_dir}/{version}", highlight=False)


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
            help="bearer token required for /v1/feedback (default: none)",
        ),
    ] = None,
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
    keep_alive: Annotated[
        float,
        typer.Option(
            min=1,
            help="seconds an idle keep-alive connection stays open (longer than clients' "
            "pools keep them, so a reused connection is not closed under a request)",
        ),
    ] = 75.0,
) -> None:
    """Serve recommendations over HTTP (FastAPI + uvicorn); the web page is at `/`."""
    import logging

    import uvicorn

    from directrec.serve.app import ServeConfig, create_app

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
        max_inflight=max_inflight,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        watch_seconds=watch_seconds,
        list_cache=list_cache,
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
    )


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
