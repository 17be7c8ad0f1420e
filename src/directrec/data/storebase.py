"""What every store backend shares: the one schema definition (rendered for DuckDB,
PostgreSQL and the SQLite feedback log), the reads, `forget`, and the helpers that name
and fingerprint a store. The backends (store.DuckStore, pgstore.PgStore) import this
module; it imports neither of them.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

# --------------------------------------------------------------------------- schema
# Column types by dialect. "serial" is an auto-numbered primary key (PostgreSQL BIGSERIAL,
# SQLite's AUTOINCREMENT rowid); DuckDB tables never use it.
_TYPES = {
    "duckdb": {
        "text": "VARCHAR",
        "text[]": "VARCHAR[]",
        "int": "BIGINT",
        "float": "DOUBLE",
        "bytes": "BLOB",
    },
    "postgres": {
        "text": "TEXT",
        "text[]": "TEXT[]",
        "int": "BIGINT",
        "float": "DOUBLE PRECISION",
        "bytes": "BYTEA",
        "serial": "BIGSERIAL PRIMARY KEY",
    },
    "sqlite": {
        "text": "TEXT",
        "int": "INTEGER",
        "float": "REAL",
        "bytes": "BLOB",
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
    },
}


@dataclass(frozen=True)
class Table:
    """One table: columns as (name, type, "NOT NULL"/"UNIQUE"/""), an optional primary
    key, the dialects that hold it, and secondary btree indexes as (name suffix, columns)
    for the row stores only (DuckDB's columnar scans gain little from them)."""

    name: str
    columns: tuple[tuple[str, str, str], ...]
    key: tuple[str, ...] = ()
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    dialects: tuple[str, ...] = ("duckdb", "postgres")
    renamed: dict[str, str] = field(default_factory=dict)  # dialect → its own table name

    def name_in(self, dialect: str) -> str:
        return self.renamed.get(dialect, self.name)

    def render(self, dialect: str) -> list[str]:
        """The CREATE TABLE statement (idempotent) of this table in `dialect`."""
        types, name = _TYPES[dialect], self.name_in(dialect)
        cols = [" ".join(p for p in (c, types[t], extra) if p) for c, t, extra in self.columns]
        if self.key:
            cols.append(f"PRIMARY KEY ({', '.join(self.key)})")
        return [f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(cols)})"]

    def render_indexes(self, dialect: str) -> list[str]:
        """Its secondary indexes' CREATE INDEX statements (none in DuckDB)."""
        if dialect == "duckdb":
            return []
        name = self.name_in(dialect)
        return [
            f"CREATE INDEX IF NOT EXISTS {name}_{suffix} ON {name} ({', '.join(cols)})"
            for suffix, cols in self.indexes
        ]


NN = "NOT NULL"
TABLES = (
    Table("meta", (("key", "text", ""), ("value", "text", "")), key=("key",)),
    Table("users", (("user_id", "text", ""),), key=("user_id",)),
    Table(
        "items",
        (
            ("item_id", "text", ""),
            ("title", "text", ""),
            ("text", "text", ""),
            ("categories", "text[]", ""),
            ("image", "text", ""),  # a local image file's absolute path ("" or NULL: none)
        ),
        key=("item_id",),
    ),
    # PostgreSQL reads a user's rows through the btree on (user_id, seq); DuckDB's scans are
    # columnar, so it keeps each user's history pre-assembled in `user_histories` instead.
    Table(
        "interactions",
        (
            ("seq", "int", NN),
            ("user_id", "text", NN),
            ("item_id", "text", NN),
            ("ts", "int", ""),
            ("rating", "float", ""),
            ("event", "text", ""),
        ),
        indexes=(("user", ("user_id", "seq")),),
    ),
    Table(
        "item_embeddings",
        (("model", "text", NN), ("item_id", "text", NN), ("vector", "bytes", NN)),
        key=("model", "item_id"),
    ),
    # sha256 of each forgotten user id (never the id): publish refuses artefacts naming them.
    Table("forgotten", (("user_hash", "text", ""),), key=("user_hash",)),
    # DuckDB's point-read path: one row per user, the item ids oldest first as a JSON array
    # (a single string decompresses in one step; a list column costs a vector of children).
    Table(
        "user_histories",
        (("user_id", "text", ""), ("items", "text", NN)),
        key=("user_id",),
        dialects=("duckdb",),
    ),
    # Stream events already applied (data/stream.py): each event's idempotency key, written
    # in the transaction that adds its interaction row, so a redelivery is not applied twice.
    Table("stream_keys", (("key", "text", ""), ("seq", "int", NN)), key=("key",)),
    # The feedback log: a PostgreSQL store's own table, else the SQLite file's `events`.
    Table(
        "feedback_events",
        (
            ("seq", "serial", ""),
            ("key", "text", "NOT NULL UNIQUE"),
            ("user_id", "text", NN),
            ("item_id", "text", NN),
            ("type", "text", NN),
            ("value", "float", ""),
            ("ts", "float", NN),
            ("received", "float", NN),
        ),
        indexes=(("user", ("user_id", "seq")),),
        dialects=("postgres", "sqlite"),
        renamed={"sqlite": "events"},
    ),
)
TABLE = {t.name: t for t in TABLES}


def schema(dialect: str, only: tuple[str, ...] | None = None, indexes: bool = True) -> list[str]:
    """The CREATE statements of `dialect`'s tables (or of `only`), with their indexes
    unless `indexes` is False (a bulk load builds them after the rows are in)."""
    return [
        stmt
        for t in TABLES
        if dialect in t.dialects and (only is None or t.name in only)
        for stmt in t.render(dialect) + (t.render_indexes(dialect) if indexes else [])
    ]


# --------------------------------------------------------------------------- helpers
def is_url(db: object) -> bool:
    """Is `db` a PostgreSQL URL (else a DuckDB file path)?"""
    return str(db).startswith(("postgresql://", "postgres://"))


def describe(db: object) -> str:
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


def store_name(db: object) -> str:
    """A short name for results: the file's stem or the database's name."""
    if is_url(db):
        from urllib.parse import urlsplit

        return urlsplit(str(db)).path.strip("/") or "postgres"
    from pathlib import Path

    return Path(str(db)).stem


def user_hash(user_id: str) -> str:
    """How a forgotten user is remembered: sha256 of the id, never the id itself."""
    return hashlib.sha256(str(user_id).encode()).hexdigest()


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
# The one ordering rule of a history (preprocess.chronological_order): time, rows without
# a time first, ties in ingest order.
CHRONOLOGICAL = "ts NULLS FIRST, seq"


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
            "image": pa.array(image_column(items), pa.string()),
        }
    )


def image_column(items: pd.DataFrame) -> list[str]:
    if "image" not in items.columns:
        return [""] * len(items)
    return items["image"].fillna("").astype(str).tolist()


# A store written before items had images lacks the column: writers add it (idempotent in
# DuckDB and PostgreSQL alike), readers select "" in its place.
ADD_IMAGE_COLUMN = "ALTER TABLE items ADD COLUMN IF NOT EXISTS image {text}"
ITEM_INSERT = "INSERT INTO items (item_id, title, text, categories, image) SELECT * FROM items_in"


def hashes_arrow(user_ids: object) -> pa.Table:
    """The distinct `user_ids`' hashes as a one-column table (`user_hash`)."""
    unique = pd.unique(pd.Series(user_ids, dtype=object).astype(str))
    return pa.table({"user_hash": pa.array([user_hash(u) for u in unique], pa.string())})


# --------------------------------------------------------------------------- reads
class StoreBase:
    """What every backend offers: reads for fitting and serving, the embedding cache, and
    `forget`. A backend supplies `_frame`, `_rows`, `_exec`, `transaction`, `close`,
    `_scrub` (make deleted rows unrecoverable from its files), and the SQL that matches a
    column against a list parameter (`IN_LIST`)."""

    IN_LIST = "IN (SELECT unnest(?))"
    DIALECT = "duckdb"
    USER_TABLES: tuple[str, ...] = ("interactions", "users")
    location: str

    def _frame(self, sql: str, params: list | None = None) -> pd.DataFrame:
        raise NotImplementedError

    def _rows(self, sql: str, params: list | None = None) -> list[tuple]:
        raise NotImplementedError

    def _exec(self, sql: str, params: list | None = None) -> int:
        """Run a statement; the number of rows it changed."""
        raise NotImplementedError

    def _has(self, table: str) -> bool:
        """Does the store hold `table` (stores made by older versions may lack one)?"""
        raise NotImplementedError

    def _scrub(self, tables: tuple[str, ...]) -> None:
        """Rewrite `tables` so the bytes of deleted rows are gone from the files."""
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> StoreBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        if not user_ids:
            return {}
        rows = self._rows(
            f"SELECT user_id, item_id FROM interactions WHERE user_id {self.IN_LIST} "
            f"ORDER BY {CHRONOLOGICAL}",
            [list(map(str, user_ids))],
        )
        out: dict[str, list[str]] = {}
        for u, i in rows:
            out.setdefault(str(u), []).append(str(i))
        return {str(u): out[str(u)] for u in user_ids if str(u) in out}

    def history(self, user_id: str) -> list[str] | None:
        """One user's item ids in the order of `histories` (None: no interactions). A
        point read for the service: one indexed query, no DataFrame."""
        rows = self._rows(
            f"SELECT item_id FROM interactions WHERE user_id = ? ORDER BY {CHRONOLOGICAL}",
            [user_id],
        )
        return [str(r[0]) for r in rows] if rows else None

    def user_ids(self, limit: int | None = None) -> list[str]:
        """Distinct user ids in ingest order of their first interaction."""
        sql = "SELECT user_id FROM interactions GROUP BY user_id ORDER BY min(seq)"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [str(r[0]) for r in self._rows(sql)]

    def _columns(self, table: str) -> set[str]:
        """The columns `table` has in this store (older stores may lack newer ones)."""
        raise NotImplementedError

    def items(self) -> pd.DataFrame:
        image = "coalesce(image, '')" if "image" in self._columns("items") else "''"
        df = self._frame(
            f"SELECT item_id, title, text, categories, {image} AS image FROM items ORDER BY item_id"
        )
        df["categories"] = [list(c) if c is not None else [] for c in df["categories"]]
        return df

    def meta(self) -> dict[str, str]:
        return dict(self._rows("SELECT key, value FROM meta"))

    def last_seq(self) -> int:
        """The ingest position of the newest interaction (0 when empty): a watermark of
        what a model fit on this store has seen."""
        return int(self._rows("SELECT coalesce(max(seq), 0) FROM interactions")[0][0])

    def user_seq(self, user_id: str) -> int:
        """The ingest position of this user's newest interaction (0: none): what a service
        compares to notice rows another process appended (indexed in PostgreSQL)."""
        rows = self._rows(
            "SELECT coalesce(max(seq), 0) FROM interactions WHERE user_id = ?", [user_id]
        )
        return int(rows[0][0])

    def counts(self) -> dict[str, int]:
        u, i, n = self._rows(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items), "
            "(SELECT count(*) FROM interactions)"
        )[0]
        return {"users": int(u), "items": int(i), "interactions": int(n)}

    def fingerprint(self) -> str:
        rows = self._frame(FINGERPRINT_SQL)
        return fingerprint_of({k: rows[k].to_numpy() for k in rows.columns})

    def forgotten(self) -> set[str]:
        """Hashes (`user_hash`) of the users forgotten here and not ingested again since."""
        if not self._has("forgotten"):
            return set()
        return {str(r[0]) for r in self._rows("SELECT user_hash FROM forgotten")}

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
        return {
            t: int(self._rows(f"SELECT count(*) FROM {t} WHERE user_id = ?", [user_id])[0][0])
            for t in self.USER_TABLES
            if self._has(t)
        }

    def forget(self, user_id: str) -> dict[str, int]:
        """Delete every row of this user (interactions, the user, what else the backend
        keeps per user) in one transaction, remember the id's hash, refresh the
        fingerprint, then rewrite what held the rows so their bytes leave the files.
        Returns the rows deleted per table."""
        if not self._has("forgotten"):  # a store written before forget remembered ids
            for stmt in schema(self.DIALECT, only=("forgotten",)):
                self._exec(stmt)
        with self.transaction():
            deleted = {
                t: self._exec(f"DELETE FROM {t} WHERE user_id = ?", [user_id])
                for t in self.USER_TABLES
                if self._has(t)
            }
            # Remembered even with no rows here: a user known only from feedback (the log
            # beside the store) reaches artefacts through `update`, which checks this.
            h = user_hash(user_id)
            if not self._rows("SELECT 1 FROM forgotten WHERE user_hash = ?", [h]):
                self._exec("INSERT INTO forgotten VALUES (?)", [h])
            if not any(deleted.values()):
                return deleted  # nothing of this user here: the data did not change
            self._set_meta("fingerprint", self.fingerprint())
            # Services poll this to drop what they cached of users (other processes too).
            self._set_meta("forget_epoch", str(int(self.meta().get("forget_epoch", 0)) + 1))
        self._scrub(tuple(t for t, n in deleted.items() if n))
        return deleted

    def _set_meta(self, key: str, value: str) -> None:
        if not self._exec("UPDATE meta SET value = ? WHERE key = ?", [value, key]):
            self._exec("INSERT INTO meta VALUES (?, ?)", [key, value])
