"""The embedded store: one DuckDB file per project with users, items and interactions,
and `open_store`/`ingest`, which take a DuckDB path or a PostgreSQL URL (pgstore).

Writes are all-or-nothing: a new store is built beside its final path and renamed into
place; an existing store is changed inside one transaction, rolled back on any error.
`forget` then copies the database into a fresh file that replaces the old one, so the
deleted rows' bytes are in neither the file nor its WAL.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from directrec.data.pgstore import PgStore, ingest_pg
from directrec.data.schema import DataError, RawData
from directrec.data.storebase import (
    ADD_IMAGE_COLUMN,
    CHRONOLOGICAL,
    FINGERPRINT_SQL,
    ITEM_INSERT,
    StoreBase,
    describe,
    fingerprint_of,
    hashes_arrow,
    interactions_arrow,
    is_url,
    items_arrow,
    schema,
    store_name,
)

__all__ = ["DuckStore", "StoreBase", "describe", "ingest", "is_url", "open_store", "store_name"]
SCHEMA = ";\n".join(schema("duckdb")) + ";"
# A user's history as the service reads it: item ids oldest first, as one JSON array.
POINT_SQL = "SELECT items FROM user_histories WHERE user_id = ?"
HISTORY_SQL = f"SELECT user_id, to_json(list(item_id ORDER BY {CHRONOLOGICAL})) FROM interactions"


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list:
    """Execute and fetch everything (DuckDB 2 requires results to be consumed)."""
    cur = con.execute(sql, params) if params is not None else con.execute(sql)
    return cur.fetchall()


def open_store(db: str | Path, read_only: bool = True) -> StoreBase:
    """The store at `db`: a PostgreSQL URL or a DuckDB file."""
    if is_url(db):
        return PgStore(str(db))
    return DuckStore(db, read_only=read_only)


class DuckStore(StoreBase):
    """A DuckDB file. Open read-only for reading (many processes may), read-write for
    ingest, caches and forget (one process at a time, as DuckDB requires)."""

    USER_TABLES = ("interactions", "users", "user_histories")

    def __init__(self, path: str | Path, read_only: bool = True) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.read_only = read_only
        if not self.path.exists():
            raise DataError(
                "store not found; create it with `directrec ingest`", file=str(self.path)
            )
        self.con = self._connect()
        self.tables = {r[0] for r in _run(self.con, "SELECT table_name FROM duckdb_tables()")}
        if not read_only and "user_histories" not in self.tables:
            # A store written before the history table existed: add what it lacks.
            with self.transaction():
                _run(self.con, SCHEMA)
                _run(self.con, f"INSERT INTO user_histories {HISTORY_SQL} GROUP BY user_id")
            self.tables |= {"user_histories", "forgotten"}

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=self.read_only)
        except duckdb.Error as e:
            raise DataError(f"cannot open store ({e})", file=str(self.path)) from e

    def close(self) -> None:
        self.con.close()

    def _frame(self, sql: str, params: list | None = None) -> pd.DataFrame:
        return self.con.execute(sql, params).df() if params else self.con.execute(sql).df()

    def _rows(self, sql: str, params: list | None = None) -> list[tuple]:
        return _run(self.con, sql, params)

    def _exec(self, sql: str, params: list | None = None) -> int:
        rows = _run(self.con, sql, params)
        return int(rows[0][0]) if rows and rows[0] and rows[0][0] is not None else 0

    def _has(self, table: str) -> bool:
        return table in self.tables

    def _columns(self, table: str) -> set[str]:
        rows = _run(
            self.con, "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table]
        )
        return {str(r[0]) for r in rows}

    # Point reads go to `user_histories` (one row per user behind its primary-key index):
    # the cost of a read does not grow with the interactions, known user or not.
    def history(self, user_id: str) -> list[str] | None:
        if not self._has("user_histories"):
            return super().history(user_id)
        rows = _run(self.con, POINT_SQL, [user_id])
        return [str(x) for x in json.loads(rows[0][0])] if rows else None

    def histories(self, user_ids: list[str]) -> dict[str, list[str]]:
        if not self._has("user_histories"):
            return super().histories(user_ids)
        if not user_ids:
            return {}
        wanted = [str(u) for u in user_ids]
        rows = dict(
            _run(
                self.con,
                f"SELECT user_id, items FROM user_histories WHERE user_id {self.IN_LIST}",
                [wanted],
            )
        )
        return {u: [str(x) for x in json.loads(rows[u])] for u in wanted if u in rows}

    def _scrub(self, tables: tuple[str, ...]) -> None:
        """Copy the whole database into a fresh file and put it in place of the old one:
        DuckDB leaves deleted rows' bytes in freed blocks (CHECKPOINT does not clear
        them), a new file holds only live rows. The old file and its WAL are gone after."""
        if self.read_only:
            raise DataError("forget needs the store opened read-write", file=self.location)
        fresh = self.path.with_name(self.path.name + ".rewrite")
        for f in (fresh, Path(str(fresh) + ".wal")):
            f.unlink(missing_ok=True)
        name = _run(self.con, "SELECT current_database()")[0][0]
        try:
            _run(self.con, f"ATTACH '{_quote(fresh)}' AS rewrite_target")
            _run(self.con, f'COPY FROM DATABASE "{name}" TO rewrite_target')
            _run(self.con, "DETACH rewrite_target")  # checkpoints the copy: no WAL left
            self.con.close()
            with open(fresh, "rb") as f:
                os.fsync(f.fileno())
            os.replace(fresh, self.path)
            Path(str(self.path) + ".wal").unlink(missing_ok=True)  # the old file's, if any
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                _run(self.con, "DETACH rewrite_target")
            fresh.unlink(missing_ok=True)
            raise
        finally:
            with contextlib.suppress(duckdb.Error):
                self.con.close()
            self.con = self._connect()

    def put_embeddings(self, model: str, item_ids: list[str], vectors: np.ndarray) -> None:
        table = pa.table(
            {
                "model": pa.array([model] * len(item_ids)),
                "item_id": pa.array(item_ids),
                "vector": pa.array([v.astype(np.float32).tobytes() for v in vectors], pa.binary()),
            }
        )
        with self.transaction():
            self.con.register("emb_in", table)
            _run(self.con, "DELETE FROM item_embeddings WHERE model = ?", [model])
            _run(self.con, "INSERT INTO item_embeddings SELECT * FROM emb_in")
            self.con.unregister("emb_in")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        _run(self.con, "BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            _run(self.con, "ROLLBACK")
            raise
        _run(self.con, "COMMIT")


def ingest(
    db: str | Path,
    raw: RawData,
    *,
    strict: bool = False,
    append: bool = False,
    options: dict | None = None,
    items_file: str | None = None,
    interactions_file: str | None = None,
) -> dict[str, int]:
    """Write `raw` into the store at `db` in one all-or-nothing step.

    `strict`: an interaction whose item is not in the catalogue is an error (naming the
    line); otherwise such items are added with empty text. `append` adds to what the store
    holds; otherwise the store's data is replaced.
    """
    inter, items = raw.interactions, raw.items
    if inter.empty:
        raise DataError("no interactions to ingest", file=interactions_file)
    if items is not None and not items.empty:
        dup = items["item_id"].duplicated()
        if dup.any():
            bad = items["item_id"][dup].iloc[0]
            raise DataError(
                f"item id {bad!r} appears twice in the catalogue",
                file=items_file,
                field=raw.item_field_name("item_id"),
            )
        if strict:
            known = pd.Index(items["item_id"])
            missing = ~inter["item_id"].isin(known)
            if missing.any():
                row = inter[missing].iloc[0]
                where = f" {items_file}" if items_file else ""
                raise DataError(
                    f"item {row['item_id']!r} is not in the catalogue{where} (--strict)",
                    file=interactions_file,
                    line=int(row["line"]),
                    field=raw.field_name("item_id"),
                )
    elif strict:
        raise DataError("--strict needs an item catalogue (--items)", file=interactions_file)

    if is_url(db):
        return ingest_pg(str(db), raw, append=append, options=options)
    db = Path(db)
    new = not db.exists()
    target = db.with_name(db.name + ".building") if new else db
    if new:
        db.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
    con = duckdb.connect(str(target))
    try:
        _run(con, "BEGIN TRANSACTION")
        had = _run(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'user_histories'")
        _run(con, SCHEMA)
        _run(con, ADD_IMAGE_COLUMN.format(text="VARCHAR"))
        if not append:
            for t in (
                "interactions",
                "items",
                "users",
                "meta",
                "user_histories",
                "item_embeddings",
                "stream_keys",  # replaced data: events applied to the old data are gone too
            ):
                _run(con, f"DELETE FROM {t}")
        start = con.execute("SELECT coalesce(max(seq) + 1, 0) FROM interactions").fetchall()[0][0]
        frame = interactions_arrow(inter, start)
        con.register("inter_in", frame)
        _run(con, "INSERT INTO interactions SELECT * FROM inter_in")
        # The point-read table: rebuilt whole, or for the appended rows' users only.
        if append and had[0][0]:
            _run(con, "CREATE TEMP TABLE touched AS SELECT DISTINCT user_id FROM inter_in")
            _run(con, "DELETE FROM user_histories WHERE user_id IN (SELECT user_id FROM touched)")
            _run(
                con,
                f"INSERT INTO user_histories {HISTORY_SQL} "
                "WHERE user_id IN (SELECT user_id FROM touched) GROUP BY user_id",
            )
            _run(con, "DROP TABLE touched")
        else:
            _run(con, f"INSERT INTO user_histories {HISTORY_SQL} GROUP BY user_id")
        # A user ingested again is in the data again: no longer forgotten.
        if _run(con, "SELECT count(*) FROM forgotten")[0][0]:
            con.register("hashes_in", hashes_arrow(frame["user_id"].to_numpy(zero_copy_only=False)))
            _run(con, "DELETE FROM forgotten WHERE user_hash IN (SELECT user_hash FROM hashes_in)")
        if items is not None and not items.empty:
            con.register("items_in", items_arrow(items))
            # Catalogue rows replace earlier rows of the same id (an update of the text).
            _run(con, "DELETE FROM items WHERE item_id IN (SELECT item_id FROM items_in)")
            _run(con, ITEM_INSERT)
            _run(con, "DELETE FROM item_embeddings WHERE item_id IN (SELECT item_id FROM items_in)")
        _run(
            con,
            "INSERT INTO items (item_id, title, text, categories) "
            "SELECT DISTINCT item_id, '', '', []::VARCHAR[] FROM interactions "
            "WHERE item_id NOT IN (SELECT item_id FROM items)",
        )
        _run(
            con,
            "INSERT INTO users SELECT DISTINCT user_id FROM interactions "
            "WHERE user_id NOT IN (SELECT user_id FROM users)",
        )
        fp = _fingerprint(con)
        meta = {"source": raw.source, "fingerprint": fp, "options": json.dumps(options or {})}
        for k, v in meta.items():
            _run(con, "INSERT OR REPLACE INTO meta VALUES (?, ?)", [k, v])
        counts = dict(
            zip(
                ("users", "items", "interactions"),
                con.execute(
                    "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items), "
                    "(SELECT count(*) FROM interactions)"
                ).fetchall()[0],
                strict=False,
            )
        )
        _run(con, "COMMIT")
        # Inside the guard: a new store's checkpoint can still fail (a full disk), and
        # then its half-written file must not stay behind.
        _run(con, "CHECKPOINT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            _run(con, "ROLLBACK")
        with contextlib.suppress(duckdb.Error):
            con.close()
        if new:
            target.unlink(missing_ok=True)
            Path(str(target) + ".wal").unlink(missing_ok=True)
        raise
    con.close()
    if new:
        os.replace(target, db)
    return counts


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def _fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    return fingerprint_of(con.execute(FINGERPRINT_SQL).fetchnumpy())
