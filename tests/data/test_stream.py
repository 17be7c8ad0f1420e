"""`directrec stream`: Redis Stream entries into the store through a consumer group, with
dead letters, idempotent writes, shared load, claimed pending entries and kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from directrec.data.schema import DataError, RawData, make_interactions
from directrec.data.store import ingest, open_store
from directrec.data.stream import Consumer, StreamConfig
from directrec.data.streamwrite import open_writer
from tests.conftest import planted_frames


def make_store(db, n_users: int = 12) -> None:
    inter, items = planted_frames(n_users=n_users, history=(4, 6))
    raw = make_interactions(inter["user_id"], inter["item_id"], timestamp=inter["timestamp"])
    ingest(db, RawData(raw, items))


def config(redis_server, stream: str, **kw) -> StreamConfig:
    kw = {"batch": 50, "block_ms": 50, "claim_idle_ms": 200} | kw
    return StreamConfig(redis_server.url, stream, **kw)


def add(r, stream: str, n: int, start: int = 0, **extra) -> list[str]:
    """n good entries (user s<i % 5>, item i<i % 40>), keyed k<i>."""
    pipe = r.pipeline()
    for i in range(start, start + n):
        fields = {"user_id": f"s{i % 5}", "item_id": f"i{i % 40}", "key": f"k{i}"}
        pipe.xadd(stream, {**fields, "timestamp": str(2_000_000_000 + i), **extra})
    return [e.decode() for e in pipe.execute()]


def streamed(db) -> list[str]:
    """The streamed events' keys as the store holds them, one per applied event."""
    with open_store(db) as s:
        return [str(k) for (k,) in s._rows("SELECT key FROM stream_keys ORDER BY seq")]


def test_entries_land_validated_and_bad_ones_are_dead_lettered(
    store_at, redis_server, r, stream_name
):
    make_store(store_at)
    with open_store(store_at) as s:
        before = s.counts()
    add(r, stream_name, 30)
    bad = [
        {"item_id": "i1"},  # no user
        {"user_id": "s1", "item_id": " "},
        {"user_id": "s1", "item_id": "i1", "timestamp": "yesterday"},
        {"user_id": "s1", "item_id": "i1", "timestamp": "99999999999999999999999"},
        {"user_id": "s1", "item_id": "i1", "rating": "inf"},
        {"user_id": "s1", "item_id": "i1", "event": "dislike"},
        {"user_id": b"\xff\xfe", "item_id": "i1"},
        {"user_id": "s1", "item_id": "i\x001"},
    ]
    for fields in bad:
        r.xadd(stream_name, fields)
    add(r, stream_name, 10, start=30, event="purchase", rating="4.5")
    # ISO dates and millisecond times are read as ingest reads them; no time: the log's.
    r.xadd(
        stream_name, {"user_id": "s9", "item_id": "new-item", "timestamp": "2031-05-06T07:08:09Z"}
    )
    r.xadd(stream_name, {"user_id": "s9", "item_id": "i2", "timestamp": "1900000000123"})
    r.xadd(stream_name, {"user_id": "s9", "item_id": "i3"})
    c = Consumer(config(redis_server, stream_name, batch=7), store_at)
    totals = c.run(idle_exit=0.3)
    c.close()
    assert (totals.stored, totals.dead, totals.duplicates) == (43, len(bad), 0)
    with open_store(store_at) as s:
        after, meta = s.counts(), s.meta()
        assert after["interactions"] == before["interactions"] + 43  # what `info` shows
        assert after["users"] == before["users"] + 6 and "new-item" in set(s.items()["item_id"])
        assert s.history("s9") == ["i3", "i2", "new-item"]  # by time: now, 2030, 2031
        assert meta["fingerprint"] == s.fingerprint()  # brought up to date on stopping
        extra = s._rows(
            "SELECT rating, event FROM interactions WHERE user_id = 's0' AND rating IS NOT NULL"
        )
        assert extra and all(row == (4.5, "purchase") for row in extra)
    dead = r.xrange(f"{stream_name}:dead")
    reasons = [f[b"reason"].decode() for _, f in dead]
    assert len(reasons) == len(bad)
    assert reasons[0].startswith("field 'user_id': missing (the entry has fields: item_id)")
    assert reasons[1] == "field 'item_id': missing value"
    assert "expected a Unix time or an ISO-8601 date, got 'yesterday'" in reasons[2]
    assert "not a plausible Unix time" in reasons[3]
    assert "finite number" in reasons[4] and "/v1/feedback" in reasons[5]
    assert "UTF-8" in reasons[6] and reasons[7] == "field 'item_id': contains a NUL character"
    assert dead[0][1][b"item_id"] == b"i1" and dead[0][1][b"stream"] == stream_name.encode()
    assert r.xpending(stream_name, "directrec")["pending"] == 0  # everything acknowledged


def test_strict_refuses_items_outside_the_catalogue(tmp_path, redis_server, r, stream_name):
    db = tmp_path / "s.duckdb"
    make_store(db)
    r.xadd(stream_name, {"user_id": "s1", "item_id": "i1"})
    r.xadd(stream_name, {"user_id": "s1", "item_id": "nowhere"})
    c = Consumer(config(redis_server, stream_name, strict=True), db)
    totals = c.run(idle_exit=0.2)
    c.close()
    assert (totals.stored, totals.dead) == (1, 1)
    ((_, fields),) = r.xrange(f"{stream_name}:dead")
    assert b"not in the catalogue (--strict)" in fields[b"reason"]


def test_a_redelivered_or_repeated_event_is_applied_once(store_at, redis_server, r, stream_name):
    """A batch committed by a consumer that died before acknowledging it is claimed by
    another, which finds its keys stored and skips them; a key sent twice lands once."""
    make_store(store_at)
    r.xgroup_create(stream_name, "directrec", id="0", mkstream=True)
    add(r, stream_name, 20)
    add(r, stream_name, 5, start=0)  # the producer retried these: same keys, new entries
    got = r.xreadgroup("directrec", "dead-one", {stream_name: ">"}, count=12)
    taken = got[0][1]
    # "dead-one" wrote its batch (the store's transaction committed) and died before XACK.
    from directrec.data.stream import parse_entry

    with open_writer(store_at) as w:
        w.append([parse_entry(stream_name, e.decode(), f, None) for e, f in taken])
    time.sleep(0.3)  # longer than claim_idle_ms: its entries may be taken
    c = Consumer(config(redis_server, stream_name), store_at)
    totals = c.run(idle_exit=0.3)
    c.close()
    assert totals.claimed == 12 and totals.stored == 8 and totals.duplicates == 12 + 5
    keys = streamed(store_at)
    assert sorted(keys) == sorted(f"k{i}" for i in range(20))  # each exactly once
    assert r.xpending(stream_name, "directrec")["pending"] == 0


def test_consumers_of_one_group_share_the_load(pg_url, redis_server, r, stream_name):
    make_store(pg_url)
    add(r, stream_name, 600)
    consumers = [
        Consumer(config(redis_server, stream_name, consumer=f"c{n}", batch=20), pg_url)
        for n in range(3)
    ]
    threads = [threading.Thread(target=c.run, kwargs={"idle_exit": 0.5}) for c in consumers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in consumers:
        c.close()
    shares = [c.totals.stored for c in consumers]
    assert sum(shares) == 600 and all(n > 0 for n in shares), shares
    keys = streamed(pg_url)
    assert len(keys) == len(set(keys)) == 600
    with open_store(pg_url) as s:  # numbering unique, in commit order
        seqs = [q for (q,) in s._rows("SELECT seq FROM interactions")]
        assert len(seqs) == len(set(seqs))


def _consumer_process(db, url: str, stream: str, name: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "directrec.cli", "stream", "--db", str(db), "--source", url]
    cmd += ["--stream", stream, "--consumer", name, "--claim-after", "0.3", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait(what, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _pending_on(r, stream: str, name: str) -> int:
    return next(
        (
            c["pending"]
            for c in r.xinfo_consumers(stream, "directrec")
            if c["name"].decode() == name
        ),
        0,
    )


def test_kill_9_mid_batch_then_after_commit_applies_everything_once(
    pg_url, redis_server, r, stream_name
):
    """Killed holding a batch it had not committed (its transaction waits on a lock we
    hold), and killed after committing but before acknowledging (Redis writes paused):
    either way a second consumer claims the batch and the store holds each event once."""
    import psycopg

    make_store(pg_url)
    a = _consumer_process(pg_url, redis_server.url, stream_name, "a", "--batch", "40")
    _wait(
        lambda: (
            r.exists(stream_name)
            and _pending_on(r, stream_name, "a") == 0
            and _known(r, stream_name, "a")
        )
    )
    blocker = psycopg.connect(pg_url)
    blocker.execute("LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE")  # held: no commit
    add(r, stream_name, 40)
    _wait(lambda: _pending_on(r, stream_name, "a") == 40)
    time.sleep(0.3)  # a is inside its transaction, waiting for the lock
    a.send_signal(signal.SIGKILL)
    a.wait()
    assert streamed(pg_url) == []
    # Second fault: b claims a's batch, commits it, and dies before acknowledging it.
    b = _consumer_process(pg_url, redis_server.url, stream_name, "b", "--batch", "80")
    _wait(lambda: _pending_on(r, stream_name, "b") == 40)  # claimed; waiting for the lock
    r.execute_command("CLIENT", "PAUSE", "20000", "WRITE")  # its XACK cannot run
    try:
        blocker.rollback()  # lets b commit
        _wait(lambda: len(streamed(pg_url)) == 40)
        time.sleep(0.2)
        b.send_signal(signal.SIGKILL)
        b.wait()
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
        blocker.close()
    assert _pending_on(r, stream_name, "b") == 40  # committed, never acknowledged
    add(r, stream_name, 40, start=40)
    c = _consumer_process(pg_url, redis_server.url, stream_name, "c", "--idle-exit", "1.5")
    output = c.communicate(timeout=120)[0].decode()
    assert c.returncode == 0, output
    keys = streamed(pg_url)
    assert sorted(keys) == sorted(f"k{i}" for i in range(80))  # exactly once each
    assert r.xpending(stream_name, "directrec")["pending"] == 0
    assert '"stored": 40, "duplicates": 40' in output and '"claimed": 40' in output


def _known(r, stream: str, name: str) -> bool:
    return any(c["name"].decode() == name for c in r.xinfo_consumers(stream, "directrec"))


def test_kill_9_of_a_duckdb_consumer_loses_and_repeats_nothing(
    tmp_path, redis_server, r, stream_name
):
    db = tmp_path / "s.duckdb"
    make_store(db)
    with open_store(db) as s:
        before = s.counts()["interactions"]
    add(r, stream_name, 4000)
    a = _consumer_process(db, redis_server.url, stream_name, "a", "--batch", "25")
    group = lambda: r.xinfo_groups(stream_name)[0]  # noqa: E731
    _wait(
        lambda: (
            r.exists(stream_name)
            and r.xinfo_groups(stream_name)
            and (group()["entries-read"] or 0) >= 400
        )
    )
    a.send_signal(signal.SIGKILL)
    a.wait()
    assert group()["entries-read"] < 4000  # killed while consuming
    b = _consumer_process(db, redis_server.url, stream_name, "b", "--idle-exit", "1.5")
    output = b.communicate(timeout=300)[0].decode()
    assert b.returncode == 0, output
    keys = streamed(db)
    assert len(keys) == len(set(keys)) == 4000
    with open_store(db) as s:
        assert s.counts()["interactions"] == before + 4000


def test_a_duckdb_store_held_by_another_process_is_refused_with_the_way_out(
    tmp_path, redis_server, stream_name
):
    db = tmp_path / "s.duckdb"
    make_store(db)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(db)!r}, read_only=True); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(DataError, match="PostgreSQL store"):
            Consumer(config(redis_server, stream_name), db)
    finally:
        holder.kill()
        holder.wait()


def test_a_bad_source_is_refused(tmp_path):
    with pytest.raises(DataError, match="redis:// URL"):
        StreamConfig("http://localhost:6379")
    with pytest.raises(DataError, match="time-unit"):
        StreamConfig("redis://127.0.0.1:1/0", time_unit="days")
