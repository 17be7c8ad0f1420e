"""Commands that build lists from a saved model: recommend, generate."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from directrec.cli.common import StoreOpt, _run_guarded, app, fail, out

if TYPE_CHECKING:
    from directrec.generate.context import ModelContext

# --------------------------------------------------------------------------- recommend
UNKNOWN_USER = (
    "unknown user {user!r} (no interactions in the store or its feedback log); "
    '--query "…" recommends for a new user from a sentence, --cold-start gives the list '
    "a user with no history gets"
)


@app.command()
def recommend(
    model_dir: Annotated[
        Path, typer.Option("--model", help="a directory written by `train`, or a registry")
    ],
    db: StoreOpt,
    user: Annotated[
        str | None,
        typer.Option(help="a known user's id as in your data (an unknown one is an error)"),
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(help="a new user's wish in words, e.g. 'haunted houses and ghosts'"),
    ] = None,
    cold_start: Annotated[
        bool, typer.Option("--cold-start", help="the list for a user with no history")
    ] = False,
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
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="MMR re-ranking over the item vectors the model read (item_features); "
            "default: the model's fitted diversify stage, else none",
        ),
    ] = None,
) -> None:
    """Top-K recommendations for one known user (--user), a new user described in words
    (--query) or a user with no history (--cold-start), built as the service builds them:
    the user's history is the store's rows plus the feedback received since, and an
    unknown --user is an error, as it is a 404 over HTTP."""
    from directrec.data.histories import Histories
    from directrec.generate.context import ModelContext
    from directrec.generate.pipeline import ListOptions
    from directrec.generate.pipeline import recommend as build_lists
    from directrec.generate.stages import load_pipeline

    if sum((user is not None, query is not None, cold_start)) != 1:
        fail("give exactly one of --user ID, --query TEXT or --cold-start")
    if query is not None and not query.strip():
        fail("--query must not be empty")

    def run() -> dict:
        from directrec.serve.registry import resolve

        model, stages = load_pipeline(resolve(model_dir)[0])
        reads = model.capabilities.reads_requests
        fitted = stages.diversify is not None and stages.diversify.weight > 0
        needs_text = bool(diversity) or (diversity is None and fitted)
        needs_text = needs_text or (query is not None and not reads)
        # a sentence is embedded as text, so only text vectors can answer it
        text = query is not None and not reads
        ctx = ModelContext.build(
            model, db, vectors=needs_text, stages=stages, features="text" if text else None
        )
        history, dislikes, request, sims = [], set(), "", None
        exclude_seen = not include_seen
        if user is not None:
            got = stored_history(db, user)
            if got is None:
                raise ValueError(UNKNOWN_USER.format(user=user))
            history, dislikes = got
        elif query is not None and reads:
            request = query  # the model reads the sentence itself (the LM's prompt)
        elif query is not None:
            history, sims = sentence(ctx, query)
            exclude_seen = False  # the pseudo history is not what the user saw
        hists = Histories.from_raw([history], ctx.items, ctx.users.indices([user or ""]))
        excluded = ctx.items.indices(sorted(dislikes))
        options = ListOptions(
            k=k,
            exclude_seen=exclude_seen,
            diversity=diversity,
            explain=explain,
            request=request,
            query_sims=sims,
            # a sentence's nearest items lead the history: reasons cite them as matches
            query=query if query is not None and not reads else "",
            query_items=len(history) if query is not None and not reads else 0,
        )
        (rec,) = build_lists(
            model,
            hists,
            options,
            exclude=[excluded[excluded >= 0]],
            info=ctx.info,
            stages=ctx.stages,
        )
        rows = [
            {
                "rank": r + 1,
                "item_id": ctx.raw([i])[0],
                "title": ctx.info.titles[i],
                "categories": list(ctx.info.categories[i]),
                "score": float(sc),
            }
            for r, (i, sc) in enumerate(zip(rec.items, rec.scores, strict=True))
        ]
        for row, reason in zip(rows, rec.reasons or [], strict=False):
            row["reason"] = reason.text
            row["evidence"] = ctx.raw(np.asarray(reason.evidence, dtype=np.int64))
        return {
            "user": user,
            "query": query,
            "model": model.name,
            "fallback": rec.fallback,
            "history_used": int(hists.lengths()[0]),
            "items": rows,
        }

    res = _run_guarded(run)
    if as_json:
        out.print_json(json.dumps(res))
        return
    who = f"user {user}" if user is not None else f"“{query}”" if query else "a new user"
    note = " (no usable history: popularity fallback)" if res["fallback"] else ""
    out.print(f"top-{k} for {who} from {res['model']}{note}:", highlight=False, markup=False)
    for r in res["items"]:  # ids beside titles: titles repeat, ids name the item
        title = f"{r['title']} (id {r['item_id']})" if r["title"] else f"id {r['item_id']}"
        out.print(f"{r['rank']:>3}. {title}  [{r['score']:.4f}]", highlight=False, markup=False)
        if r.get("reason"):
            cited = f" [evidence: {', '.join(r['evidence'])}]" if r["evidence"] else ""
            out.print(f"     {r['reason']}{cited}", highlight=False, markup=False)


def stored_history(db: str, user: str) -> tuple[list[str], set[str]] | None:
    """The user's history as the service reads it (the store's rows, then the feedback
    log's events: likes appended, dislikes kept apart), or None for an unknown user."""
    from directrec.data.store import open_store
    from directrec.serve.caches import HistoryCache
    from directrec.serve.feedback import feedback_source, open_log

    log = open_log(feedback_source(db))
    if log is None:  # no feedback yet (opening the log would create its file)
        with open_store(db) as store:
            seq = store.histories([user]).get(user)
        return None if seq is None else (list(seq), set())
    cache = HistoryCache(db, log, size=1)
    try:
        got = cache.get(user)
    finally:
        cache.close()
        log.close()
    return None if got is None else (list(got.items), set(got.dislikes))


def sentence(ctx: ModelContext, query: str) -> tuple[list[str], np.ndarray | None]:
    """A sentence's pseudo history (raw ids) and query similarities, as the service makes
    them (generate/coldstart.py sentence_inputs) over the model's items with text."""
    from directrec.generate.coldstart import CategoryIndex, sentence_inputs
    from directrec.text.encoder import encode

    vectors = ctx.info.vectors
    has_text = vectors is not None and bool(np.any(vectors))
    if not has_text:
        raise ValueError("this catalogue has no text: --query is unavailable")
    rows = np.flatnonzero(np.any(vectors != 0, axis=1))  # items the store has text for
    blend = ctx.stages.query_blend
    w = blend.w if blend is not None else 0.0
    cats = [ctx.info.categories[i] for i in rows]
    index = CategoryIndex.build(cats) if w > 0 else None
    idx, sims = sentence_inputs(
        encode([query])[0], vectors[rows], rows, ctx.model.n_items, index, w
    )
    return ctx.raw(rows[idx]), sims


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
    progress: Annotated[bool, typer.Option(help="a bar on a terminal, else log lines")] = True,
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
        return generate(
            model, version, db, out_file, k, wanted, batch_size, stages=stages, progress=progress
        )

    facts = _run_guarded(run)
    if int(os.environ.get("RANK", 0)) == 0:
        out.print(
            f"wrote {out_file}: " + ", ".join(f"{k}={v}" for k, v in facts.items()),
            highlight=False,
            markup=False,
        )
