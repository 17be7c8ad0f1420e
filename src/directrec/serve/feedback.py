"""Durable feedback events: the service's write path (SQLite, WAL, synchronous=FULL).

DuckDB allows one writer process and the store is shared with training jobs, so the
service appends events here instead; `directrec update` reads both. An event is
acknowledged only after its transaction has committed (fsync'd to the WAL), and an
idempotency key makes retries harmless: a key seen before is ignored, not stored twice.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

EVENT_TYPES = ("view", "click", "like", "dislike", "purchase", "rating")
NEGATIVE_RATING = 2.5  # a rating at or below this counts as a dislike

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value REAL,
    ts REAL NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
"""


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
    """Append-only event log. Thread-safe: one connection, writes serialised by a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute("PRAGMA busy_timeout=5000")
        self._con.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def add(self, events: list[Event]) -> list[bool]:
        """Store events in one transaction; returns, per event, whether it was new (False:
        its idempotency key was already stored). Returns only once durable."""
        now = time.time()
        rows = [
            (e.key or uuid.uuid4().hex, e.user_id, e.item_id, e.type, e.value, e.ts, now)
            for e in events
        ]
        fresh = []
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cur = self._con.execute(
                        "INSERT OR IGNORE INTO events (key, user_id, item_id, type, value, ts, "
                        "received) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    fresh.append(cur.rowcount == 1)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        return fresh

    def events(self, after_seq: int = 0) -> list[tuple[int, Event]]:
        """Events stored after `after_seq`, in arrival order."""
        return self._select("seq > ?", after_seq)

    def events_of(self, user_id: str) -> list[Event]:
        """One user's events in arrival order (indexed: a service reads them on demand)."""
        return [e for _, e in self._select("user_id = ?", user_id)]

    def _select(self, where: str, param: object) -> list[tuple[int, Event]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT seq, user_id, item_id, type, ts, value, key FROM events "
                f"WHERE {where} ORDER BY seq",
                (param,),
            ).fetchall()
        return [(r[0], Event(r[1], r[2], r[3], r[4], r[5], r[6])) for r in rows]

    def last_seq(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def integrity(self) -> str:
        with self._lock:
            return str(self._con.execute("PRAGMA integrity_check").fetchone()[0])


def default_path(db: str | Path) -> Path:
    """Where a store's feedback log lives unless told otherwise: beside the store."""
    db = Path(db)
    return db.with_name(db.name + ".feedback.sqlite")
