"""Commands on the store: ingest, info, forget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from directrec.cli.common import StoreOpt, _run_guarded, app, err, out


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
    delimiter: Annotated[
        str | None,
        typer.Option(
            help="CSV column separator of both files, e.g. ';' or tab (default: , or tab)"
        ),
    ] = None,
    time_unit: Annotated[
        str | None,
        typer.Option(help="unit of numeric times: s | ms | us | ns (default: from their size)"),
    ] = None,
) -> None:
    """Read interactions (and a catalogue) into the store, validated, in one transaction,
    then say what was read, kept and dropped (and why)."""
    from directrec.data import loaders, preprocess
    from directrec.data.store import describe
    from directrec.data.store import ingest as store_ingest
    from directrec.data.summary import IngestSummary, summarize

    def run() -> IngestSummary:
        nonlocal fmt, interactions, items
        if dataset:
            if dataset != "ml-100k":
                raise ValueError(f"unknown bundled dataset {dataset!r} (have: ml-100k)")
            interactions, items = loaders.bundled_ml100k()
            fmt = "recbole"
        if interactions is None:
            raise ValueError("give --interactions PATH (or --dataset ml-100k)")
        raw = loaders.load(
            fmt,
            interactions,
            items,
            columns,
            item_columns,
            delimiter=delimiter,
            time_unit=time_unit,
        )
        n_read = len(raw.interactions)
        df, dropped = preprocess.prepare(raw.interactions, min_rating, dedup, kcore)
        raw.interactions = df
        options = {
            "format": fmt,
            "min_rating": min_rating,
            "kcore": kcore,
            "dedup": dedup,
            "interactions": str(interactions),
            "items": str(items) if items else None,
            "delimiter": delimiter,
            "time_unit": time_unit,
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
        return summarize(
            raw,
            df,
            read=n_read,
            dropped=dropped,
            store=describe(db),
            totals=counts,
            catalogue=str(items) if items else None,
        )

    from directrec.progress import stage

    with stage(f"ingest {interactions or dataset}"):  # a spinner, or a start and an end line
        summary = _run_guarded(run)
    for line in summary.lines():
        out.print(line, highlight=False, markup=False)
    for line in summary.warnings():
        err.print(f"warning: {line}", highlight=False, markup=False)


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
