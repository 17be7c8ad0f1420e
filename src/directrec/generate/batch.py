"""Batch generation: every (or every listed) user's top-K, precomputed into one Parquet
file with scores, the model's name and version and the store's data fingerprint.

It streams: users are read from the store and scored in batches through the shared
pipeline, and rows go to the file batch by batch, so memory stays bounded by the batch
size, not the number of users. The file is written under a temporary name and renamed
when complete: a killed run leaves no half-written output.

Under `torchrun` (or any launcher that sets RANK and WORLD_SIZE) each rank takes every
WORLD_SIZE-th user, writes its own part atomically, and rank 0 merges the parts into the
output once all ranks are done (a process-group barrier; no cluster engine of our own).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from directrec.data.store import open_store
from directrec.generate.context import ModelContext
from directrec.generate.pipeline import ListOptions, recommend, rows_per_batch
from directrec.generate.stages import Stages
from directrec.models import distributed
from directrec.models.base import Recommender
from directrec.progress import Steps

SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("score", pa.float32()),
        ("fallback", pa.bool_()),
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("data_fingerprint", pa.string()),
    ]
)


def read_user_file(path: str | Path) -> list[str]:
    """One user id per line (blank lines and surrounding spaces ignored)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    users = [x.strip() for x in lines if x.strip()]
    if not users:
        raise ValueError(f"{path}: no user ids")
    return users


@contextlib.contextmanager
def atomic_parquet(out: Path) -> Iterator[pq.ParquetWriter]:
    """A Parquet writer on a temporary file that becomes `out` only if the block ends
    normally; on any error (or a kill) no `out` and no temporary file is left."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            yield writer
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _batches(users: Sequence[str], size: int) -> Iterator[list[str]]:
    for b in range(0, len(users), size):
        yield list(users[b : b + size])


def write_lists(
    model: Recommender,
    version: str,
    db: str | Path,
    out: str | Path,
    k: int,
    users: Sequence[str] | None = None,
    batch_size: int = 1024,
    exclude_seen: bool = True,
    stages: Stages | None = None,
    progress: bool = False,
) -> dict:
    """Write the lists of `users` (default: every user in the store) to `out`
    atomically, built with the model's fitted `stages`; returns counts and timing."""
    if k < 1:
        raise ValueError("k must be at least 1")
    out = Path(out)
    diversify = stages is not None and stages.diversify is not None and stages.diversify.weight > 0
    ctx = ModelContext.build(model, db, vectors=diversify, stages=stages)
    t0 = time.perf_counter()
    with open_store(db) as store:
        fingerprint = store.meta().get("fingerprint", "")
        todo = list(users) if users is not None else store.user_ids()
        rows = 0
        bar = Steps(f"generate {model.name}", len(todo), on=progress, unit="users")
        with bar, atomic_parquet(out) as writer:
            for batch in _batches(todo, rows_per_batch(model.n_items, batch_size)):
                h = ctx.histories(store, batch)
                options = ListOptions(k=k, exclude_seen=exclude_seen)
                lists = recommend(model, h, options, info=ctx.info, stages=ctx.stages)
                writer.write_table(_table(batch, lists, ctx, model.name, version, fingerprint))
                rows += sum(len(r.items) for r in lists)
                bar.advance(len(batch))
    seconds = time.perf_counter() - t0
    return {
        "users": len(todo),
        "rows": rows,
        "seconds": round(seconds, 3),
        "users_per_second": round(len(todo) / max(seconds, 1e-9), 1),
    }


def _table(users, lists, ctx, name, version, fingerprint) -> pa.Table:
    n = [len(r.items) for r in lists]
    items = np.concatenate([r.items for r in lists]) if lists else np.zeros(0, np.int64)
    scores = np.concatenate([r.scores for r in lists]) if lists else np.zeros(0, np.float32)
    total = int(sum(n))
    return pa.table(
        {
            "user_id": np.repeat(np.asarray(users, dtype=object), n),
            "rank": np.concatenate([np.arange(1, m + 1) for m in n]).astype(np.int32)
            if total
            else np.zeros(0, np.int32),
            "item_id": ctx.raw(items),
            "score": np.where(np.isfinite(scores), scores, np.nan).astype(np.float32),
            "fallback": np.repeat([r.fallback for r in lists], n),
            "model": [name] * total,
            "model_version": [version] * total,
            "data_fingerprint": [fingerprint] * total,
        },
        schema=SCHEMA,
    )


def generate(
    model: Recommender,
    version: str,
    db: str | Path,
    out: str | Path,
    k: int,
    users: Sequence[str] | None = None,
    batch_size: int = 1024,
    stages: Stages | None = None,
    progress: bool = False,
) -> dict:
    """`write_lists`, sharded over ranks when launched by torchrun: each rank writes
    `out`'s part for its users, rank 0 merges the parts into `out` (atomically)."""
    shard = distributed.current()
    if not shard.active:
        return write_lists(
            model, version, db, out, k, users, batch_size, stages=stages, progress=progress
        )
    if users is None:
        with open_store(db) as store:
            users = store.user_ids()
    mine = list(users)[shard.rank :: shard.world]
    out = Path(out)
    part = out.with_name(f".{out.name}.part-{shard.rank}-of-{shard.world}")
    facts = write_lists(
        model,
        version,
        db,
        part,
        k,
        mine,
        batch_size,
        stages=stages,
        progress=progress and shard.main,
    )
    shard.barrier()  # every part is complete (each was renamed into place)
    if shard.main:
        parts = [
            out.with_name(f".{out.name}.part-{r}-of-{shard.world}") for r in range(shard.world)
        ]
        with atomic_parquet(out) as writer:
            for p in parts:  # streamed, a row group at a time
                f = pq.ParquetFile(p)
                for g in range(f.num_row_groups):
                    writer.write_table(f.read_row_group(g))
        for p in parts:
            p.unlink(missing_ok=True)
    shard.barrier()
    facts |= {"rank": shard.rank, "world": shard.world}
    return facts
