"""Idempotent appends of streamed interactions into a store (DuckDB file or PostgreSQL).

Each batch is one transaction that adds the new interactions (numbered after the store's
newest row, as `ingest --append` numbers them), the users and items it introduces, the
DuckDB point-read histories of the users it touched, and every event's idempotency key in
`stream_keys`. A key already there means the event was applied before (a redelivery after
a crash between commit and acknowledgement): it is skipped, so no event is applied twice.

The store's recorded data fingerprint is cleared at each commit (readers such as
`Dataset.from_store` then hash the rows themselves) and recomputed by `refresh_fingerprint`,
which the consumer calls when the stream goes quiet and when it stops: hashing every row
on every small batch would cap the throughput at the store's size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from directrec.data.schema import DataError
from directrec.data.storebase import (
    describe,
    fingerprint_of,
    hashes_arrow,
    interactions_arrow,
    is_url,
    schema,
)


@dataclass(frozen=True)
class Row:
    """One validated interaction and the key that makes applying it idempotent."""

    key: str
    user_id: str
    item_id: str
    ts: int | None
    rating: float | None
    event: str | None


@dataclass
class Applied:
    """What a batch did: keys stored now, keys stored before, keys refused (--strict:
    item not in the catalogue)."""

    stored: list[str]
    duplicates: list[str]
    unknown_items: list[str]


def _frame(rows: list[Row], start: int):
    inter = pd.DataFrame(
        {
            "user_id": [r.user_id for r in rows],
            "item_id": [r.item_id for r in rows],
            "timestamp": pd.array([r.ts for r in rows], dtype="Int64"),
            "rating": pd.array([r.rating for r in rows], dtype="Float64"),
            "event": [r.event for r in rows],
        }
    )
    return interactions_arrow(inter, start)


def _split(rows: list[Row], known: set[str]) -> tuple[list[Row], list[str]]:
    """Rows whose key is new (first of a key repeated inside the batch), and the rest."""
    fresh, dup, seen = [], [], set(known)
    for r in rows:
        if r.key in seen:
            dup.append(r.key)
        else:
            seen.add(r.key)
            fresh.append(r)
    return fresh, dup


class StreamWriter:
    """Appends batches to one store; holds its connection (DuckDB: the file's one writer)."""

    stale = False  # the store's fingerprint is cleared (set by a commit, reset on refresh)

    def append(self, rows: list[Row], strict: bool = False) -> Applied:
        raise NotImplementedError

    def refresh_fingerprint(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_writer(db: str | Path) -> StreamWriter:
    """The writer for store `db` (a PostgreSQL URL or an existing DuckDB file)."""
    return PgWriter(str(db)) if is_url(db) else DuckWriter(Path(db))


class DuckWriter(StreamWriter):
    """A DuckDB file opened read-write: DuckDB lets one process write a file and no other
    process open it meanwhile, so a service cannot serve this file while the stream runs
    (docs/serving.md: use PostgreSQL for that)."""

    def __init__(self, path: Path) -> None:
        import duckdb

        from directrec.data.store import SCHEMA

        self.path = path
        if not path.exists():
            raise DataError("store not found; create it with `directrec ingest`", file=str(path))
        try:
            self.con = duckdb.connect(str(path))
        except duckdb.IOException as e:
            raise DataError(
                f"cannot open the store for writing ({e}); DuckDB lets one process write a "
                "file and no other open it meanwhile: stop the process holding it (a running "
                "`directrec serve`?) or stream into a PostgreSQL store",
                file=str(path),
            ) from e
        self.con.execute(SCHEMA)  # stores made before `stream_keys` existed gain it

    def _all(self, sql: str, params: list | None = None) -> list:
        return self.con.execute(sql, params).fetchall()

    def append(self, rows: list[Row], strict: bool = False) -> Applied:
        from directrec.data.store import HISTORY_SQL

        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            known = {
                k
                for (k,) in self._all(
                    "SELECT key FROM stream_keys WHERE key IN (SELECT unnest(?))",
                    [[r.key for r in rows]],
                )
            }
            fresh, dup = _split(rows, known)
            unknown: list[str] = []
            if strict and fresh:
                have = {
                    i
                    for (i,) in self._all(
                        "SELECT item_id FROM items WHERE item_id IN (SELECT unnest(?))",
                        [sorted({r.item_id for r in fresh})],
                    )
                }
                unknown = [r.key for r in fresh if r.item_id not in have]
                fresh = [r for r in fresh if r.item_id in have]
            if fresh:
                start = self._all("SELECT coalesce(max(seq) + 1, 0) FROM interactions")[0][0]
                frame = _frame(fresh, int(start))
                con.register("stream_in", frame)
                con.execute("INSERT INTO interactions SELECT * FROM stream_in")
                keys = pd.DataFrame(
                    {"key": [r.key for r in fresh], "seq": np.arange(start, start + len(fresh))}
                )
                con.register("keys_in", keys)
                con.execute("INSERT INTO stream_keys SELECT key, seq FROM keys_in")
                touched = "SELECT DISTINCT user_id FROM stream_in"
                con.execute(f"DELETE FROM user_histories WHERE user_id IN ({touched})")
                con.execute(
                    f"INSERT INTO user_histories {HISTORY_SQL} "
                    f"WHERE user_id IN ({touched}) GROUP BY user_id"
                )
                con.execute(
                    "INSERT INTO items (item_id, title, text, categories) "
                    "SELECT DISTINCT item_id, '', '', []::VARCHAR[] "
                    "FROM stream_in WHERE item_id NOT IN (SELECT item_id FROM items)"
                )
                con.execute(
                    "INSERT INTO users SELECT DISTINCT user_id FROM stream_in "
                    "WHERE user_id NOT IN (SELECT user_id FROM users)"
                )
                # A user streamed again is in the data again: no longer forgotten.
                if self._all("SELECT count(*) FROM forgotten")[0][0]:
                    con.register("hashes_in", hashes_arrow(frame["user_id"].to_pylist()))
                    con.execute(
                        "DELETE FROM forgotten WHERE user_hash IN (SELECT user_hash FROM hashes_in)"
                    )
                    con.unregister("hashes_in")
                if not self.stale:
                    con.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', '')")
                con.unregister("stream_in")
                con.unregister("keys_in")
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            raise
        self.stale = self.stale or bool(fresh)
        return Applied([r.key for r in fresh], dup, unknown)

    def refresh_fingerprint(self) -> None:
        from directrec.data.storebase import FINGERPRINT_SQL

        fp = fingerprint_of(self.con.execute(FINGERPRINT_SQL).fetchnumpy())
        self.con.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", [fp])
        self.con.execute("CHECKPOINT")
        self.stale = False

    def close(self) -> None:
        self.con.close()


class PgWriter(StreamWriter):
    """A PostgreSQL store: any number of consumers (and services reading) at once. Each
    batch locks `interactions` against other writers (EXCLUSIVE: readers go on) so the
    numbering stays unique and follows commit order."""

    def __init__(self, url: str) -> None:
        from directrec.data.pgstore import PgStore, connect

        PgStore(url).close()  # refuses a database without a store, naming it
        self.url, self.con = url, connect(url)
        for stmt in schema("postgres", only=("stream_keys",)):
            self.con.execute(stmt)
        # The next number is max(seq) + 1 per batch: an index keeps that one lookup. Made
        # once (CREATE INDEX locks the table even when the index exists).
        if self.con.execute("SELECT to_regclass('interactions_seq')").fetchone()[0] is None:
            self.con.execute("CREATE INDEX IF NOT EXISTS interactions_seq ON interactions (seq)")

    def append(self, rows: list[Row], strict: bool = False) -> Applied:
        import psycopg

        con = self.con
        try:
            with con.transaction():
                con.execute("LOCK TABLE interactions IN EXCLUSIVE MODE")
                known = {
                    k
                    for (k,) in con.execute(
                        "SELECT key FROM stream_keys WHERE key = ANY(%s)", ([r.key for r in rows],)
                    ).fetchall()
                }
                fresh, dup = _split(rows, known)
                unknown: list[str] = []
                if strict and fresh:
                    have = {
                        i
                        for (i,) in con.execute(
                            "SELECT item_id FROM items WHERE item_id = ANY(%s)",
                            (sorted({r.item_id for r in fresh}),),
                        ).fetchall()
                    }
                    unknown = [r.key for r in fresh if r.item_id not in have]
                    fresh = [r for r in fresh if r.item_id in have]
                if fresh:
                    row = con.execute("SELECT coalesce(max(seq) + 1, 0) FROM interactions")
                    start = int(row.fetchone()[0])
                    with con.cursor().copy(
                        "COPY interactions (seq, user_id, item_id, ts, rating, event) FROM STDIN"
                    ) as cp:
                        for n, r in enumerate(fresh):
                            cp.write_row((start + n, r.user_id, r.item_id, r.ts, r.rating, r.event))
                    with con.cursor().copy("COPY stream_keys (key, seq) FROM STDIN") as cp:
                        for n, r in enumerate(fresh):
                            cp.write_row((r.key, start + n))
                    items = sorted({r.item_id for r in fresh})
                    users = sorted({r.user_id for r in fresh})
                    con.execute(
                        "INSERT INTO items (item_id, title, text, categories) "
                        "SELECT unnest(%s::TEXT[]), '', '', '{}'::TEXT[] "
                        "ON CONFLICT (item_id) DO NOTHING",
                        (items,),
                    )
                    con.execute(
                        "INSERT INTO users SELECT unnest(%s::TEXT[]) ON CONFLICT DO NOTHING",
                        (users,),
                    )
                    con.execute(
                        "DELETE FROM forgotten WHERE user_hash = ANY(%s)",
                        (hashes_arrow(users)["user_hash"].to_pylist(),),
                    )
                    # Another consumer may have refreshed it since: cleared on every batch.
                    con.execute(
                        "INSERT INTO meta VALUES ('fingerprint', '') "
                        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                    )
        except psycopg.Error as e:
            raise DataError(f"stream batch not written ({e})", file=describe(self.url)) from e
        self.stale = self.stale or bool(fresh)
        return Applied([r.key for r in fresh], dup, unknown)

    def refresh_fingerprint(self) -> None:
        from directrec.data.pgstore import PgStoreOn

        with self.con.transaction():
            # Readers go on; another consumer's batch waits, so the hash matches the rows.
            self.con.execute("LOCK TABLE interactions IN SHARE MODE")
            fp = PgStoreOn(self.con).fingerprint()
            self.con.execute(
                "INSERT INTO meta VALUES ('fingerprint', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (fp,),
            )
        self.stale = False

    def close(self) -> None:
        self.con.close()
