"""What the service keeps between requests: users' histories read from the store (a
bounded cache, misses remembered too, dropped when the store changes) and finished lists."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from directrec.data.store import DuckStore, open_store
from directrec.serve.feedback import Event, FeedbackLog, PgFeedbackLog

log = logging.getLogger("directrec.serve")


class HistoryCache:
    """Users' histories as raw item ids, read on demand: the store's rows (oldest first,
    the one ordering rule of StoreBase.histories), then positive feedback in arrival order;
    disliked items kept apart and never recommended. A bounded LRU holds recent users.

    Each entry remembers the newest feedback event it includes; every read compares it
    with the log (one indexed lookup), so feedback stored by another worker or machine is
    applied before the history is used, and that number is the history's version."""

    def __init__(self, db: str | Path, feedback: FeedbackLog, size: int = 50_000) -> None:
        self.db = db
        self.store = open_store(db)  # DuckDB connections are not shared across threads
        self.feedback, self.size = feedback, size
        self.cache: OrderedDict[str, History] = OrderedDict()
        # Ids the store has no rows for (bounded LRU): a flood of unknown ids costs no
        # store reads. Feedback is still looked up per request; the store's own changes
        # (ingest, append, forget) move its epoch, which clears this (`refresh`).
        self.unknown: OrderedDict[str, None] = OrderedDict()
        self.lock = threading.Lock()
        self.store_lock = threading.Lock()
        self.reads = 0
        self.epoch = self._epoch()
        self.inline = not isinstance(feedback, PgFeedbackLog)  # peek() on the event loop
        # Other processes may append to a PostgreSQL store while this one serves (`directrec
        # stream`): each read then compares the user's newest stored row too (one indexed
        # lookup). Nothing else can write a DuckDB file this process holds open.
        self.live = not isinstance(self.store, DuckStore)

    def close(self) -> None:
        self.store.close()

    def _epoch(self) -> str:
        """The store's version as far as caches care: its forget epoch and fingerprint
        (ingest, append and forget each change one)."""
        with self.store_lock:
            return _store_epoch(self.store.meta())

    def get(self, user: str, peeked: object = None) -> History | None:
        """The user's history, or None for a user with no store row and no feedback.
        Unknown users are not cached (a flood of them cannot fill memory). `peeked`: what
        the caller's own `peek` returned, so the log is not asked twice."""
        got = peeked if peeked is not None else self.peek(user)
        if isinstance(got, History):
            return got
        stored_seq = got[0].stored if got is not None else 0
        if got is not None and got[1] > got[0].version:  # feedback arrived since: apply it
            seq, dislikes = list(got[0].items), set(got[0].dislikes)
            events = self.feedback.events_of(user, got[0].version)
            version = max([got[1], *(n for n, _ in events)])
        else:  # not cached, or its events were forgotten: read everything
            # The position first: a row landing between the two reads is read again later.
            stored_seq = self._store_seq(user) if self.live else 0
            if not self.live:
                stored = self._stored(user)
            else:  # the position stands in for the negative cache: no rows, no read
                stored = self._read_store(user) if stored_seq else None
            events = self.feedback.events_of(user)
            if stored is None and not events:
                self.evict(user)
                return None
            seq, dislikes = list(stored or []), set()
            version = events[-1][0] if events else 0
        for _, e in events:
            _apply(seq, dislikes, e)
        entry = History(tuple(seq), frozenset(dislikes), version, stored_seq)
        with self.lock:
            self.cache[user] = entry
            self.cache.move_to_end(user)
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)
        return entry

    def _stored(self, user: str) -> list[str] | None:
        """The store's history of `user` (None: no rows), through the negative cache."""
        with self.lock:
            if user in self.unknown:
                self.unknown.move_to_end(user)
                return None
        stored = self._read_store(user)
        if stored is None:
            with self.lock:
                self.unknown[user] = None
                while len(self.unknown) > self.size:
                    self.unknown.popitem(last=False)
        return stored

    def _read_store(self, user: str) -> list[str] | None:
        with self.store_lock:
            self.reads += 1
            return self.store.history(user)

    def peek(self, user: str) -> History | tuple[History, int] | None:
        """The cached entry if it is current (one indexed lookup in the log), else
        (stale entry, the log's version) or None when not cached. Cheap enough for the
        event loop when the log is the local SQLite file (`inline`)."""
        with self.lock:
            got = self.cache.get(user)
            if got is None:
                return None
            self.cache.move_to_end(user)
        if self.live and self._store_seq(user) != got.stored:  # rows appended: read anew
            self.evict(user)
            return None
        latest = self.feedback.user_seq(user)
        return got if latest == got.version else (got, latest)

    def _store_seq(self, user: str) -> int:
        with self.store_lock:
            return self.store.user_seq(user)

    def evict(self, user: str | None = None) -> None:
        """Drop one user's entry (None: every entry)."""
        with self.lock:
            if user is None:
                self.cache.clear()
                self.unknown.clear()
            else:
                self.cache.pop(user, None)

    def refresh(self) -> bool:
        """Drop every entry when the store's epoch moved (a user was forgotten, or rows
        ingested, possibly by another process); whether it did."""
        epoch = self._epoch()
        if epoch == self.epoch:
            return False
        self.epoch = epoch
        self.evict()
        return True

    def forget(self, user: str) -> dict[str, int]:
        """Delete the user from the store, then drop what this process cached. A DuckDB
        store is reopened read-write for it, which fails while another process has it open
        (use PostgreSQL for several workers)."""
        with self.store_lock:
            if isinstance(self.store, DuckStore):
                self.store.close()
                try:
                    with open_store(self.db, read_only=False) as rw:
                        deleted = rw.forget(user)
                finally:
                    self.store = open_store(self.db)
            else:
                deleted = self.store.forget(user)
            self.epoch = _store_epoch(self.store.meta())
        self.evict(user)
        return deleted

    def users(self, limit: int) -> list[str]:
        with self.store_lock:
            return self.store.user_ids(limit)


def _store_epoch(meta: dict[str, str]) -> str:
    return f"{meta.get('forget_epoch', '0')}:{meta.get('fingerprint', '')}"


@dataclass(frozen=True)
class History:
    items: tuple[str, ...]  # oldest first
    dislikes: frozenset[str]
    version: int  # the newest feedback event included (0: none)
    stored: int = 0  # the newest store row included (a live PostgreSQL store; else 0)

    @property
    def key(self) -> tuple[int, int]:
        """What a finished list of this history is cached under."""
        return (self.version, self.stored)


class ListCache:
    """Finished responses (JSON bytes) keyed by user, model version, the user's history
    version and the request's options; a bounded LRU. A user's feedback changes the
    history version and a swap changes the model version, so a stale list is never found;
    their old entries are also dropped at once (feedback, forget) or all together (swap)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple, bytes] = OrderedDict()
        self.by_user: dict[str, set[tuple]] = {}
        self.lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> bytes | None:
        with self.lock:
            body = self.entries.get(key)
            if body is None:
                self.misses += 1
                return None
            self.entries.move_to_end(key)
            self.hits += 1
            return body

    def put(self, key: tuple, body: bytes) -> None:
        if self.size <= 0:
            return
        with self.lock:
            self.entries[key] = body
            self.by_user.setdefault(key[0], set()).add(key)
            while len(self.entries) > self.size:
                old, _ = self.entries.popitem(last=False)
                keys = self.by_user.get(old[0])
                if keys is not None:
                    keys.discard(old)
                    if not keys:
                        del self.by_user[old[0]]

    def drop_user(self, user: str) -> None:
        with self.lock:
            for key in self.by_user.pop(user, ()):
                self.entries.pop(key, None)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.by_user.clear()


def _apply(seq: list[str], dislikes: set[str], e: Event) -> None:
    if e.positive:
        seq.append(e.item_id)
        dislikes.discard(e.item_id)
    else:
        dislikes.add(e.item_id)
