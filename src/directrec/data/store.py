"""The embedded store: one DuckDB file per project with users, items and interactions.

Writes are all-or-nothing: a new store is built beside its final path and renamed into
place; an existing store is changed inside one transaction, rolled back on any error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from directrec.data.schema import DataError, RawData

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS users (user_id VARCHAR PRIMARY KEY);
CREATE TABLE IF NOT EXISTS items (
    item_id VARCHAR PRIMARY KEY, title VARCHAR, text VARCHAR, categories VARCHAR[]);
CREATE TABLE IF NOT EXISTS interactions (
    seq BIGINT NOT NULL, user_id VARCHAR NOT NULL, item_id VARCHAR NOT NULL,
    ts BIGINT, rating DOUBLE, event VARCHAR);
CREATE TABLE IF NOT EXISTS item_embeddings (
    model VARCHAR NOT NULL, item_id VARCHAR NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (model, item_id));
"""


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list:
    """Execute and fetch everything (DuckDB 2 requires results to be consumed)."""
    cur = con.execute(sql, params) if params is not None else con.execute(sql)
    return cur.fetchall()


def interactions_arrow(inter: pd.DataFrame, start: int) -> pa.Table:
    """Validated interactions as the store's rows, numbered from `start` in ingest order."""
    return pa.table(
        {
            "seq": pa.array(np.arange(start, start + len(inter), dtype=np.int64)),
            "user_id": pa.array(inter["user_id"].astype(str).tolist()),
            "item_id": pa.array(inter["item_id"].astype(str).tolist()),
            "ts": pa.Array.from_pandas(inter["timestamp"].astype("Int64"), type=pa.int64()),
            "rating": pa.Array.from_pandas(inter["rating"].astype("Float64"), type=pa.float64()),
            "event": pa.array(
                [None if v is None or v != v else str(v) for v in inter["event"]], pa.string()
            ),
        }
    )


def items_arrow(items: pd.DataFrame) -> pa.Table:
    return pa.table(
        {
            "item_id": pa.array(items["item_id"].astype(str).tolist(), pa.string()),
            "title": pa.array(items["title"].fillna("").astype(str).tolist(), pa.string()),
            "text": pa.array(items["text"].fillna("").astype(str).tolist(), pa.string()),
            "categories": pa.array(
                [list(c) if c is not None else [] for c in items["categories"]],
                pa.list_(pa.string()),
            ),
        }
    )


def is_url(db: str | Path) -> bool:
    """Is `db` a PostgreSQL URL (else a DuckDB file path)?"""
    return str(db).startswith(("postgresql://", "postgres://"))


def describe(db: str | Path) -> str:
    """`db` as it may be shown or recorded: a URL without its password."""
    if not is_url(db):
        return str(db)
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(str(db))
    if parts.password is None:
        return str(db)
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def store_name(db: str | Path) -> str:
    """A short name for results: the file's stem or the database's name."""
    if is_url(db):
        from urllib.parse import urlsplit

        return urlsplit(str(db)).path.strip("/") or "postgres"
    return Path(db).stem


def open_store(db: str | Path, read_only: bool = True) -> StoreBase:
    """The store at `db`: a PostgreSQL URL or a DuckDB file."""
    if is_url(db):
        from directrec.data.pgstore import PgStore

        return PgStore(str(db))
    return DuckStore(db, read_only=read_only)


def fingerprint_of(rows: dict[str, np.ndarray]) -> str:
    """A short content hash of the interactions in ingest order (user_id, item_id, ts and
    rating with -1 for missing): the same data gives the same value on every backend."""
    h = hashlib.sha256()
    for k in ("user_id", "item_id"):
        h.update("\x1f".join(map(str, rows[k])).encode())
    h.update(np.ascontiguousarray(np.asarray(rows["ts"], dtype=np.int64)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(rows["rating"], dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


FINGERPRINT_SQL = (
    "SELECT user_id, item_id, coalesce(ts, -1) AS ts, coalesce(rating, -1) AS rating "
    "FROM interactions ORDER BY seq"
)


class StoreBase:
    """What every backend offers: reads for fitting and serving, the embedding cache, and
    `forget`. A backend supplies `_frame`, `_rows`, `_exec`, `transaction`, `close`, and
    the SQL that matches a column against a list parameter (`IN_LIST`)."""

    IN_LIST = "IN (SELECT unnest(?))"
    location: str

    def _frame(self, sql: str, params: list | None = None) -> pd.DataFrame:
        raise NotImplementedError

    def _rows(self, sql: str, params: list | None = None) -> list[tuple]:
        raise NotImplementedError

    def _exec(self, sql: str, params: list | None = None) -> int:
        """Run a statement; the number of rows it changed."""
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> StoreBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def interactions(self) -> pd.DataFrame:
        """All interactions in ingest order, with canonical column names."""
        return self._frame(
            "SELECT user_id, item_id, ts AS timestamp, rating, event, seq AS line "
            "FROM interactions ORDER BY seq"
        )

    def histories(self, user_ids: list[str]) -> dict[str, list[str]]:
        """The given users' item ids, oldest first by the one ordering rule (time, ties in
        ingest order; see preprocess.chronological_order). Users without interactions are
        absent. Reads only those users' rows, so a service need not hold every history."""
        from directrec.data.preprocess import chronological_order

        if not user_ids:
            return {}
        rows = self._frame(
            "SELECT user_id, item_id, ts AS timestamp, seq AS line FROM interactions "
            f"WHERE user_id {self.IN_LIST} ORDER BY seq",
            [list(map(str, user_ids))],
        )
        if rows.empty:
            return {}
        rows = rows.iloc[chronological_order(rows)]
        grouped = rows.groupby(rows["user_id"].astype(str), sort=False)["item_id"]
        return {u: items.astype(str).tolist() for u, items in grouped}

    def history(self, user_id: str) -> list[str] | None:
        """One user's item ids in the order of `histories` (None: no interactions). A lean
        point lookup for the service: no DataFrame, one query."""
        rows = self._rows("SELECT item_id, ts, seq FROM interactions WHERE user_id = ?", [user_id])
        if not rows:
            return None
        rows.sort(key=lambda r: (-math.inf if r[1] is None else r[1], r[2]))
        return [str(r[0]) for r in rows]

    def user_ids(self, limit: int | None = None) -> list[str]:
        """Distinct user ids in ingest order of their first interaction."""
        sql = "SELECT user_id FROM interactions GROUP BY user_id ORDER BY min(seq)"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [str(r[0]) for r in self._rows(sql)]

    def items(self) -> pd.DataFrame:
        df = self._frame("SELECT item_id, title, text, categories FROM items ORDER BY item_id")
        df["categories"] = [list(c) if c is not None else [] for c in df["categories"]]
        return df

    def meta(self) -> dict[str, str]:
        return dict(self._rows("SELECT key, value FROM meta"))

    def last_seq(self) -> int:
        """The ingest position of the newest interaction (0 when empty): a watermark of
        what a model fit on this store has seen."""
        return int(self._rows("SELECT coalesce(max(seq), 0) FROM interactions")[0][0])

    def counts(self) -> dict[str, int]:
        u, i, n = self._rows(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items), "
            "(SELECT count(*) FROM interactions)"
        )[0]
        return {"users": int(u), "items": int(i), "interactions": int(n)}

    def fingerprint(self) -> str:
        rows = self._frame(FINGERPRINT_SQL)
        return fingerprint_of({k: rows[k].to_numpy() for k in rows.columns})

    def embeddings(self, model: str, item_ids: list[str]) -> np.ndarray | None:
        """Cached embeddings for `item_ids` in that order, or None if any is missing."""
        rows = self._rows("SELECT item_id, vector FROM item_embeddings WHERE model = ?", [model])
        found = {i: bytes(v) for i, v in rows}
        if not item_ids or any(i not in found for i in item_ids):
            return None
        return np.stack([np.frombuffer(found[i], dtype=np.float32) for i in item_ids])

    def put_embeddings(self, model: str, item_ids: list[str], vectors: np.ndarray) -> None:
        raise NotImplementedError

    def user_rows(self, user_id: str) -> dict[str, int]:
        """How many rows of each table name this user (forget's proof)."""
        out = {
            t: int(self._rows(f"SELECT count(*) FROM {t} WHERE user_id = ?", [user_id])[0][0])
            for t in self.USER_TABLES
        }
        return out

    USER_TABLES: tuple[str, ...] = ("interactions", "users")

    def forget(self, user_id: str) -> dict[str, int]:
        """Delete every row of this user (interactions, the user, feedback kept in the
        store) in one transaction and refresh the fingerprint; rows deleted per table."""
        with self.transaction():
            deleted = {
                t: self._exec(f"DELETE FROM {t} WHERE user_id = ?", [user_id])
                for t in self.USER_TABLES
            }
            if not any(deleted.values()):
                return deleted  # nothing of this user here: the data did not change
            self._set_meta("fingerprint", self.fingerprint())
            # Services poll this to drop what they cached of users (other processes too).
            self._set_meta("forget_epoch", str(int(self.meta().get("forget_epoch", 0)) + 1))
        return deleted

    def _set_meta(self, key: str, value: str) -> None:
        if not self._exec("UPDATE meta SET value = ? WHERE key = ?", [value, key]):
            self._exec("INSERT INTO meta VALUES (?, ?)", [key, value])


class DuckStore(StoreBase):
    """A DuckDB file. Open read-only for reading (many processes may), read-write for
    ingest, caches and forget (one process at a time, as DuckDB requires)."""

    def __init__(self, path: str | Path, read_only: bool = True) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        if not self.path.exists():
            raise DataError(
                "store not found; create it with `directrec ingest`", file=str(self.path)
            )
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
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
                f"item id {bad!r} appears twice in the catalogue", file=items_file, field="item_id"
            )
        if strict:
            known = pd.Index(items["item_id"])
            missing = ~inter["item_id"].isin(known)
            if missing.any():
                row = inter[missing].iloc[0]
                raise DataError(
                    f"item {row['item_id']!r} is not in the catalogue (--strict)",
                    file=interactions_file,
                    line=int(row["line"]),
                    field="item_id",
                )
    elif strict:
        raise DataError("--strict needs an item catalogue (--items)", file=interactions_file)

    if is_url(db):
        from directrec.data.pgstore import ingest_pg

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
        _run(con, SCHEMA)
        if not append:
            for t in ("interactions", "items", "users", "meta", "item_embeddings"):
                _run(con, f"DELETE FROM {t}")
        start = con.execute("SELECT coalesce(max(seq) + 1, 0) FROM interactions").fetchall()[0][0]
        frame = interactions_arrow(inter, start)
        con.register("inter_in", frame)
        _run(con, "INSERT INTO interactions SELECT * FROM inter_in")
        if items is not None and not items.empty:
            con.register("items_in", items_arrow(items))
            # Catalogue rows replace earlier rows of the same id (an update of the text).
            _run(con, "DELETE FROM items WHERE item_id IN (SELECT item_id FROM items_in)")
            _run(con, "INSERT INTO items SELECT * FROM items_in")
            _run(con, "DELETE FROM item_embeddings WHERE item_id IN (SELECT item_id FROM items_in)")
        _run(
            con,
            "INSERT INTO items SELECT DISTINCT item_id, '', '', []::VARCHAR[] FROM interactions "
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
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            _run(con, "ROLLBACK")
        con.close()
        if new:
            target.unlink(missing_ok=True)
            Path(str(target) + ".wal").unlink(missing_ok=True)
        raise
    _run(con, "CHECKPOINT")
    con.close()
    if new:
        os.replace(target, db)
    return counts


def _fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    return fingerprint_of(con.execute(FINGERPRINT_SQL).fetchnumpy())
