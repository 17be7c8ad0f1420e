"""Durable feedback events: the service's write path.

With a DuckDB store (one writer process, shared with training jobs) events go to a SQLite
log beside it (WAL, synchronous=FULL); with a PostgreSQL store they go to its
`feedback_events` table, so every service process and machine shares one log. Either way
an event is acknowledged only after its transaction has committed, and an idempotency key
makes retries harmless: a key seen before is ignored, not stored twice. `directrec update`
reads the store and the log. Both logs are one class over the one table definition
(data/storebase.py); the PostgreSQL log overrides only how it connects, runs a statement,
opens a transaction and scrubs deleted rows.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from directrec.data.storebase import TABLE, describe, is_url, schema

EVENT_TYPES = ("view", "click", "like", "dislike", "purchase", "rating")
NEGATIVE_RATING = 2.5  # a rating at or below this counts as a dislike
_COLUMNS = "seq, user_id, item_id, type, ts, value, key"


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: str
    type: str
    ts: float
    value: float | None = None
    key: str = ""

    @property
    def positive(self) -> bool:
        """Does it say the user wants this item (history) or not (exclusion)?"""
        if self.type == "dislike":
            return False
        if self.type == "rating":
            return self.value is not None and self.value > NEGATIVE_RATING
        return True


class FeedbackLog:
    """Append-only event log in a SQLite file. Thread-safe: one connection, statements
    serialised by a lock. Deleted events are overwritten (`secure_delete`) and the file is
    vacuumed after a forget, so a forgotten user's bytes leave the file and its WAL."""

    DIALECT = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path: Path | None = Path(path)
        self.source: str | Path = self.path  # what open_log takes to reopen it
        self._location = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con: Any = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000"):
            self._con.execute(f"PRAGMA {pragma}")
        self._con.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left
        for stmt in schema("sqlite"):
            self._con.execute(stmt)
        self._lock = threading.Lock()

    @property
    def table(self) -> str:
        return TABLE["feedback_events"].name_in(self.DIALECT)

    def _run(self, sql: str, params: tuple = ()) -> Any:
        """Execute `sql` ("?" placeholders, {t} for the table) and return the cursor."""
        return self._con.execute(sql.format(t=self.table), params)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def _scrub(self) -> None:
        """Rebuild the file without free pages, then fold the WAL in and empty it."""
        self._con.execute("VACUUM")
        self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._con.close()

    @property
    def location(self) -> str:
        return self._location

    def add(self, events: list[Event]) -> list[bool]:
        """Store events in one transaction; returns, per event, whether it was new (False:
        its idempotency key was already stored). Returns only once durable."""
        now = time.time()
        fresh = []
        with self._lock, self._transaction():
            for e in events:
                cur = self._run(
                    "INSERT INTO {t} (key, user_id, item_id, type, value, ts, received) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                    (e.key or uuid.uuid4().hex, e.user_id, e.item_id, e.type, e.value, e.ts, now),
                )
                fresh.append(cur.rowcount == 1)
        return fresh

    def events(self, after_seq: int = 0) -> list[tuple[int, Event]]:
        """Events stored after `after_seq`, in arrival order."""
        return self._select("seq > ?", after_seq)

    def events_of(self, user_id: str, after_seq: int = 0) -> list[tuple[int, Event]]:
        """One user's events after `after_seq` in arrival order (indexed: a service reads
        them on demand)."""
        return self._select("user_id = ? AND seq > ?", user_id, after_seq)

    def user_seq(self, user_id: str) -> int:
        """The position of this user's newest event (0: none): the version of their
        feedback, which the service's caches compare against."""
        with self._lock:
            row = self._run(
                "SELECT COALESCE(MAX(seq), 0) FROM {t} WHERE user_id = ?", (user_id,)
            ).fetchone()
        return int(row[0])

    def forget(self, user_id: str) -> int:
        """Delete every event of this user and scrub the storage; how many there were."""
        with self._lock:
            n = self._run("DELETE FROM {t} WHERE user_id = ?", (user_id,)).rowcount
            if n:
                self._scrub()
        return n

    def _select(self, where: str, *params: object) -> list[tuple[int, Event]]:
        with self._lock:
            rows = self._run(
                f"SELECT {_COLUMNS} FROM {{t}} WHERE {where} ORDER BY seq", params
            ).fetchall()
        return [(r[0], Event(r[1], r[2], r[3], r[4], r[5], r[6])) for r in rows]

    def last_seq(self) -> int:
        with self._lock:
            return int(self._run("SELECT COALESCE(MAX(seq), 0) FROM {t}").fetchone()[0])

    def integrity(self) -> str:
        with self._lock:
            return str(self._con.execute("PRAGMA integrity_check").fetchone()[0])


class PgFeedbackLog(FeedbackLog):
    """The same log in a PostgreSQL store's `feedback_events` table: shared by every
    service process and machine that uses the store."""

    DIALECT = "postgres"

    def __init__(self, url: str) -> None:
        from directrec.data.pgstore import connect

        self.url, self.path, self.source = url, None, url
        self._location = describe(url)
        self._con = connect(url)
        for stmt in schema("postgres", only=("feedback_events",)):
            self._con.execute(stmt)
        self._lock = threading.Lock()

    def _run(self, sql: str, params: tuple = ()) -> Any:
        return self._con.execute(sql.format(t=self.table).replace("?", "%s"), params)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._con.transaction():
            yield

    def _scrub(self) -> None:
        self._con.execute(f"VACUUM FULL {self.table}")  # new files; the old are truncated

    def integrity(self) -> str:
        return "ok"


def open_feedback(db: str | Path, path: str | Path | None = None) -> FeedbackLog:
    """The feedback log of the store `db`: its own table for PostgreSQL, else the SQLite
    file `path` (default: beside the store)."""
    source = feedback_source(db, path)
    return PgFeedbackLog(str(source)) if is_url(source) else FeedbackLog(source)


def feedback_source(db: str | Path, path: str | Path | None = None) -> str | Path:
    """Where the feedback of store `db` lives: `path`, the store itself (PostgreSQL) or
    a SQLite file beside it."""
    if path is not None:
        return path
    return str(db) if is_url(db) else default_path(db)


def open_log(source: str | Path) -> FeedbackLog | None:
    """Open the log at `source` (a PostgreSQL URL or a SQLite file); None when no file
    exists there yet."""
    if is_url(source):
        return PgFeedbackLog(str(source))
    return FeedbackLog(source) if Path(source).exists() else None


def default_path(db: str | Path) -> Path:
    """Where a store's feedback log lives unless told otherwise: beside the store."""
    db = Path(db)
    return db.with_name(db.name + ".feedback.sqlite")
