"""Commands that build lists from a saved model: recommend, generate."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from directrec.cli.common import StoreOpt, _run_guarded, app, out


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
    for r in res["items"]:  # ids beside titles: titles repeat, ids name the item
        title = f"{r['title']} (id {r['item_id']})" if r["title"] else f"id {r['item_id']}"
        out.print(f"{r['rank']:>3}. {title}  [{r['score']:.4f}]", highlight=False, markup=False)
        if r.get("reason"):
            cited = f" [evidence: {', '.join(r['evidence'])}]" if r["evidence"] else ""
            out.print(f"     {r['reason']}{cited}", highlight=False, markup=False)


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
