"""Interactions from a Redis Stream into the store, through a consumer group.

Each entry is one interaction with the fields ingest reads: `user_id`, `item_id`, and
optionally `timestamp` (Unix time in any unit, or ISO-8601; absent: the time Redis logged
the entry), `rating`, `event` (free text such as view or purchase) and `key` (an
idempotency key; absent: the stream name and entry id). An entry that fails validation
goes to a dead-letter stream with the reason and is acknowledged in the same Redis
transaction, so it is neither retried forever nor lost, and the consumer goes on.

Exactly-once effect, at-least-once delivery: a batch is written in one store transaction
together with its events' keys (data/streamwrite.py) and acknowledged only after that
commit. A consumer killed before the commit leaves its entries pending; one killed after
the commit but before the acknowledgement leaves them pending too, and whoever applies
them again finds their keys stored and skips them. Consumers of one group share the
stream's entries; each also claims entries another has held pending for longer than
`claim_idle_ms` (XAUTOCLAIM), which is how a dead consumer's batch gets applied.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from directrec.data.schema import DataError
from directrec.data.streamwrite import Applied, Row, StreamWriter, open_writer
from directrec.data.times import ISO_START, LATEST, UNITS, check_unit, detect_unit

log = logging.getLogger("directrec.stream")
NEGATIVE = ("dislike",)  # explicit negatives are feedback (POST /v1/feedback), not history


@dataclass
class StreamConfig:
    source: str  # redis://host:port/db
    stream: str = "events"
    group: str = "directrec"
    consumer: str = ""  # this consumer's name in the group (default: host-pid)
    dead_letter: str = ""  # default: "<stream>:dead"
    batch: int = 500  # entries read (and written in one transaction) at a time
    block_ms: int = 1000  # how long a read waits for new entries
    claim_idle_ms: int = 30_000  # claim entries another consumer has held this long
    strict: bool = False  # an item missing from the catalogue is a dead letter
    time_unit: str | None = None  # unit of numeric times (default: from each value's size)

    def __post_init__(self) -> None:
        if not self.source.startswith(("redis://", "rediss://", "unix://")):
            raise DataError(f"--source must be a redis:// URL, not {self.source!r}")
        check_unit(self.time_unit)
        self.consumer = self.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.dead_letter = self.dead_letter or f"{self.stream}:dead"


@dataclass
class Totals:
    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    claimed: int = 0
    batches: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # dead letters by first words

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "reasons"}


class Invalid(ValueError):
    """An entry that cannot become an interaction; the message is its dead-letter reason."""


def _number(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise Invalid(f"field '{name}': expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise Invalid(f"field '{name}': expected a finite number, got {text!r}")
    return v


def event_time(text: str, unit: str | None) -> int:
    """Whole Unix seconds from a Unix time (`unit`, else read from its size as ingest
    reads a column's median) or an ISO-8601 date; 1970–2100, as ingest accepts."""
    try:
        num: float | None = float(text)
    except ValueError:
        num = None
    if num is not None:
        if not math.isfinite(num):
            raise Invalid(f"field 'timestamp': expected a Unix time, got {text!r}")
        u = unit or detect_unit([num])
        if num < 0 or num > LATEST * UNITS[u]:
            raise Invalid(
                f"field 'timestamp': {text!r} is not a plausible Unix time in {u} "
                "(1970–2100; pass --time-unit if the unit is another)"
            )
        return int(int(text) // UNITS[u]) if re.fullmatch(r"\d+", text) else int(num // UNITS[u])
    import pandas as pd

    if not re.match(ISO_START, text):
        raise Invalid(f"field 'timestamp': expected a Unix time or an ISO-8601 date, got {text!r}")
    try:
        t = pd.Timestamp(text)
    except (ValueError, OverflowError):
        raise Invalid(f"field 'timestamp': not a valid ISO-8601 date: {text!r}") from None
    t = t.tz_localize("UTC") if t.tzinfo is None else t
    seconds = int((t - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1))
    if not 0 <= seconds <= LATEST:
        raise Invalid(f"field 'timestamp': {text!r} falls outside 1970–2100")
    return seconds


def parse_entry(stream: str, entry_id: str, raw: dict[bytes, bytes], unit: str | None) -> Row:
    """One stream entry as a validated interaction; raises Invalid with the reason."""
    fields: dict[str, str] = {}
    for k, v in raw.items():
        try:
            fields[k.decode()] = v.decode()
        except UnicodeDecodeError:
            raise Invalid(f"field {k!r}: not valid UTF-8") from None
        if "\x00" in fields[k.decode()]:  # PostgreSQL text cannot hold it: a poison batch
            raise Invalid(f"field '{k.decode()}': contains a NUL character")
    for name in ("user_id", "item_id"):
        if name not in fields:
            have = ", ".join(sorted(fields)) or "none"
            raise Invalid(f"field '{name}': missing (the entry has fields: {have})")
        if not fields[name].strip():
            raise Invalid(f"field '{name}': missing value")
    ts_text = fields.get("timestamp", "").strip()
    # No time given: the interaction happened about when Redis logged it (the id's ms).
    ts = event_time(ts_text, unit) if ts_text else int(entry_id.split("-")[0]) // 1000
    rating = fields.get("rating", "").strip()
    event = fields.get("event", "").strip() or None
    if event in NEGATIVE:
        raise Invalid(
            f"field 'event': {event!r} is negative feedback; post it to the service's "
            "/v1/feedback (the stream carries interactions, which become history)"
        )
    key = fields.get("key", "").strip() or f"{stream}:{entry_id}"
    return Row(
        key,
        fields["user_id"].strip(),
        fields["item_id"].strip(),
        ts,
        _number(rating, "rating") if rating else None,
        event,
    )


class Consumer:
    """One member of a consumer group, writing into one store."""

    def __init__(
        self,
        cfg: StreamConfig,
        db: str | Path,
        on_commit: Callable[[Applied], None] | None = None,
        between: Callable[[Consumer], None] | None = None,
    ) -> None:
        """`on_commit` sees each batch's outcome once acknowledged; `between` runs after
        every read (a scheduled model update, say), when no batch is in hand."""
        import redis

        self.cfg, self.db, self.on_commit, self.between = cfg, db, on_commit, between
        self.redis = redis.Redis.from_url(cfg.source, socket_timeout=None)
        self.writer: StreamWriter | None = open_writer(db)
        self.totals = Totals()
        self.stop = threading.Event()
        self._claim_at = 0.0
        try:
            self.redis.xgroup_create(cfg.stream, cfg.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        except redis.ConnectionError as e:
            self.close()
            raise DataError(f"cannot reach Redis ({e})", file=cfg.source) from e

    def close(self) -> None:
        self.pause_writes()
        self.redis.close()

    # ------------------------------------------------------------------ the loop
    def run(self, max_events: int | None = None, idle_exit: float | None = None) -> Totals:
        """Consume until `stop` is set, `max_events` entries were handled, or nothing came
        for `idle_exit` seconds. Starts with this consumer's own pending entries (a
        restart under the same name)."""
        self.handle(self._read("0"))
        quiet_since = time.monotonic()
        while not self.stop.is_set():
            if max_events is not None and self._handled() >= max_events:
                break
            n = self.step()
            if self.between is not None:
                self.between(self)
            if n:
                quiet_since = time.monotonic()
            else:
                if self.writer is not None and self.writer.stale:  # quiet: bring it up to date
                    self.writer.refresh_fingerprint()
                if idle_exit is not None and time.monotonic() - quiet_since >= idle_exit:
                    break
        return self.totals

    def _handled(self) -> int:
        t = self.totals
        return t.stored + t.duplicates + t.dead

    def step(self) -> int:
        """Claim what dead consumers left (now and then), then read new entries; how many
        entries were handled."""
        n = 0
        if time.monotonic() >= self._claim_at:
            self._claim_at = time.monotonic() + max(self.cfg.claim_idle_ms / 2000, 0.05)
            claimed = self.claim()
            self.totals.claimed += len(claimed)
            n += self.handle(claimed)
        return n + self.handle(self._read(">"))

    def _read(self, start: str) -> list[tuple[bytes, dict]]:
        block = None if start == "0" else self.cfg.block_ms
        got = self.redis.xreadgroup(
            self.cfg.group, self.cfg.consumer, {self.cfg.stream: start}, self.cfg.batch, block
        )
        return [e for _, entries in got or [] for e in entries if e[1] is not None]

    def claim(self) -> list[tuple[bytes, dict]]:
        """Entries pending on other consumers for longer than `claim_idle_ms`, now ours."""
        out: list[tuple[bytes, dict]] = []
        cursor = "0-0"
        while len(out) < self.cfg.batch:
            got = self.redis.xautoclaim(
                self.cfg.stream,
                self.cfg.group,
                self.cfg.consumer,
                self.cfg.claim_idle_ms,
                cursor,
                count=self.cfg.batch - len(out),
            )
            cursor, entries = got[0], got[1]
            out += [e for e in entries if e[1] is not None]  # trimmed entries come back None
            if cursor in (b"0-0", "0-0"):
                break
        return out

    def writer_open(self) -> StreamWriter:
        if self.writer is None:
            self.writer = open_writer(self.db)
        return self.writer

    def pause_writes(self) -> None:
        """Let go of the store (DuckDB: so another reader in this process, such as an
        update, can open it); the next batch reopens it."""
        if self.writer is not None:
            if self.writer.stale:
                self.writer.refresh_fingerprint()
            self.writer.close()
            self.writer = None

    def handle(self, entries: list[tuple[bytes, dict]]) -> int:
        """Validate, write and acknowledge one batch; how many entries it held."""
        if not entries:
            return 0
        raws = {_id(e): raw for e, raw in entries}
        rows: list[tuple[str, Row]] = []
        dead: list[tuple[str, str]] = []  # (entry id, reason)
        for entry_id, raw in raws.items():
            try:
                rows.append(
                    (entry_id, parse_entry(self.cfg.stream, entry_id, raw, self.cfg.time_unit))
                )
            except Invalid as e:
                dead.append((entry_id, str(e)))
        applied = self.writer_open().append([r for _, r in rows], self.cfg.strict)
        refused = set(applied.unknown_items)
        dead += [
            (entry_id, f"field 'item_id': item {r.item_id!r} is not in the catalogue (--strict)")
            for entry_id, r in rows
            if r.key in refused
        ]
        # Committed: now the dead letters and the acknowledgement, in one Redis transaction
        # (a crash before EXEC leaves everything pending; nothing is dead-lettered twice).
        pipe = self.redis.pipeline(transaction=True)
        for entry_id, reason in dead:
            about = {"reason": reason, "entry_id": entry_id, "stream": self.cfg.stream}
            pipe.xadd(self.cfg.dead_letter, {**raws[entry_id], **about})
        pipe.xack(self.cfg.stream, self.cfg.group, *raws)
        pipe.execute()
        t = self.totals
        t.stored += len(applied.stored)
        t.duplicates += len(applied.duplicates)
        t.dead += len(dead)
        t.batches += 1
        for _, reason in dead:
            head = reason.split(":")[0]
            t.reasons[head] = t.reasons.get(head, 0) + 1
        if dead:
            log.warning("%d entries dead-lettered to %s", len(dead), self.cfg.dead_letter)
        if self.on_commit is not None:
            self.on_commit(applied)
        return len(entries)


def _id(e: bytes | str) -> str:
    return e.decode() if isinstance(e, bytes) else str(e)
