"""A forgotten user is gone from the bytes on disk (DuckDB file and WAL, the SQLite
feedback log and its WAL, PostgreSQL's relation files) and from what is published after;
point reads of a history use an index, and unknown ids are cached negatively."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from directrec.data import loaders
from directrec.data.schema import RawData, make_interactions
from directrec.data.store import POINT_SQL, ingest, open_store
from directrec.data.storebase import StoreBase, user_hash
from directrec.serve.caches import HistoryCache
from directrec.serve.feedback import Event, FeedbackLog, open_feedback
from tests.conftest import planted_frames
from tests.test_cli import run

WHO = "zzforgetme"


def _raw(n_users: int = 60, extra: bool = True) -> RawData:
    inter, items = planted_frames(n_users=n_users)
    if extra:  # the user to forget: several rows, an event naming them too
        mine = inter[inter["user_id"] == "u0"].assign(user_id=WHO)
        inter = pd.concat([inter, mine], ignore_index=True)
        inter.loc[inter.index[-1], "event"] = f"click by {WHO}"
    frame = make_interactions(
        inter["user_id"],
        inter["item_id"],
        timestamp=inter["timestamp"],
        rating=inter["rating"],
        event=inter["event"],
    )
    return RawData(frame, items, "test")


def _hits(files: list[Path]) -> dict[str, int]:
    """How often the id's bytes occur in each existing file."""
    return {f.name: f.read_bytes().count(WHO.encode()) for f in files if f.exists()}


def test_forget_leaves_no_bytes_in_duckdb_or_sqlite(tmp_path):
    db = tmp_path / "s.duckdb"
    ingest(db, _raw())
    log = open_feedback(db)
    log.add([Event(WHO, "i1", "like", 2e9, key=f"{WHO}-1"), Event("u1", "i2", "like", 2e9)])
    log.close()
    fb = Path(str(db) + ".feedback.sqlite")
    files = [db, Path(f"{db}.wal"), fb, Path(f"{fb}-wal")]
    assert sum(_hits(files).values()) > 0  # the scan finds the id when it is there
    with open_store(db) as s:
        before = s.counts()

    res = run("forget", "--user", WHO, "--db", db)
    assert res.exit_code == 0, res.output
    assert _hits(files + list(tmp_path.glob("s.duckdb*"))) == {
        f.name: 0 for f in files + list(tmp_path.glob("s.duckdb*")) if f.exists()
    }
    with open_store(db) as s:  # the rewritten store is whole and still answers
        assert s.counts()["users"] == before["users"] - 1
        assert s.history("u1") and s.history(WHO) is None
        assert s.forgotten() == {user_hash(WHO)} and WHO not in s.user_ids()
    log = FeedbackLog(fb)
    assert [e.user_id for _, e in log.events()] == ["u1"] and log.integrity() == "ok"
    log.close()


def test_forget_leaves_no_bytes_in_postgres_relation_files(pg_url, tmp_path):
    ingest(pg_url, _raw())
    log = open_feedback(pg_url)
    log.add([Event(WHO, "i1", "like", 2e9, key="k-1")])
    log.close()
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("ANALYZE")  # statistics may sample the id: they must go too
        data = Path(con.execute("SHOW data_directory").fetchone()[0])
        oid = con.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()[0]

    def relation_hits() -> int:
        with psycopg.connect(pg_url, autocommit=True) as con:
            con.execute("CHECKPOINT")  # shared buffers to the files
        return sum(f.read_bytes().count(WHO.encode()) for f in (data / "base" / str(oid)).iterdir())

    assert relation_hits() > 0
    res = run("forget", "--user", WHO, "--db", pg_url)
    assert res.exit_code == 0, res.output
    assert relation_hits() == 0
    with open_store(pg_url) as s:
        assert set(s.user_rows(WHO).values()) == {0} and s.history("u1")
        assert s.forgotten() == {user_hash(WHO)}


def test_ingesting_a_forgotten_user_again_clears_the_mark(tmp_path):
    db = tmp_path / "s.duckdb"
    ingest(db, _raw())
    with open_store(db, read_only=False) as s:
        s.forget(WHO)
    ingest(db, _raw(n_users=2), append=True)  # u0, u1 and WHO again
    with open_store(db) as s:
        assert s.forgotten() == set() and s.history(WHO)


def test_publish_refuses_per_user_factors_of_a_forgotten_user(tmp_path):
    db, reg = tmp_path / "s.duckdb", tmp_path / "reg"
    ingest(db, _raw())
    for model in ("als", "pop"):
        res = run("train", model, "--db", db, "--out", tmp_path / model)
        assert res.exit_code == 0, res.output
    assert run("publish", "--model", tmp_path / "als", "--registry", reg).exit_code == 0
    assert run("forget", "--user", WHO, "--db", db).exit_code == 0

    res = run("publish", "--model", tmp_path / "als", "--registry", reg)
    assert res.exit_code == 2 and "forgotten" in res.output and "Train it again" in res.output
    res = run("publish", "--model", tmp_path / "pop", "--registry", reg)  # no per-user vectors
    assert res.exit_code == 0, res.output
    published = json.loads((reg / "v0002" / "ids.json").read_text())["user_ids"]
    assert (
        WHO not in published
        and WHO in json.loads((tmp_path / "pop" / "ids.json").read_text())["user_ids"]
    )
    reg2 = tmp_path / "r3"
    res = run("publish", "--model", tmp_path / "als", "--registry", reg2, "--db", tmp_path / "x")
    assert res.exit_code == 2  # no store to check against: not published unchecked
    from directrec.serve import registry

    registry.publish(tmp_path / "als", reg2)  # the API without a store: the caller's choice
    # update refits on the store without the user and publishes without their id
    res = run("update", "--model", reg2, "--db", db, "--min-gate-users", "1000")
    assert res.exit_code == 0, res.output
    ids = json.loads((reg2 / registry.current(reg2) / "ids.json").read_text())["user_ids"]
    assert WHO not in ids and sum(u.startswith("\x00forgotten") for u in ids) == 1


def test_point_reads_use_the_history_index(tmp_path):
    db = tmp_path / "s.duckdb"
    ingest(db, _raw())
    with open_store(db) as s:
        # DuckDB picks the index scan when it runs the filter: EXPLAIN ANALYZE shows it
        plan = s._rows(f"EXPLAIN ANALYZE {POINT_SQL}", ["u3"])
        assert "Index Scan" in plan[0][1], plan[0][1]
        inter = s.interactions()
        rows = inter[inter["user_id"] == "u3"].sort_values(["timestamp", "line"])
        assert s.history("u3") == rows["item_id"].tolist()


def test_unknown_ids_are_cached_until_the_store_changes(tmp_path):
    db = tmp_path / "s.duckdb"
    ingest(db, _raw(n_users=10, extra=False))
    log = FeedbackLog(tmp_path / "fb.sqlite")
    cache = HistoryCache(db, log, size=100)
    try:
        for _ in range(3):
            assert cache.get("newbie") is None
        assert cache.reads == 1  # the store was asked once
        log.add([Event("newbie", "i3", "like", 2e9, key="f1")])  # feedback still counts
        assert cache.get("newbie").items == ("i3",)
    finally:
        cache.close()
        log.close()


def test_a_shared_store_shows_rows_another_process_appends_at_once(pg_url, tmp_path):
    """PostgreSQL: other processes append while this one serves (`directrec stream`), so
    each read compares the user's newest row (one indexed lookup, no history read for an
    unknown id) instead of remembering unknown ids until the store's epoch moves."""
    ingest(pg_url, _raw(n_users=10, extra=False))
    log = FeedbackLog(tmp_path / "fb.sqlite")
    cache = HistoryCache(pg_url, log, size=100)
    try:
        for _ in range(3):
            assert cache.get("newbie") is None
        assert cache.reads == 0  # its position said "no rows": no history was read
        log.add([Event("newbie", "i3", "like", 2e9, key="f1")])  # feedback still counts
        assert cache.get("newbie").items == ("i3",)
        known = cache.get("u1")
        more = make_interactions(
            pd.Series(["newbie", "u1"]),
            pd.Series(["i5", "i6"]),
            timestamp=pd.Series([1, 2 * 10**9]),
        )
        ingest(pg_url, RawData(more, None, "more"), append=True)  # another process appends
        assert cache.get("newbie").items == ("i5", "i3")  # before any refresh
        assert cache.get("u1").items == (*known.items, "i6")
        assert cache.get("u1").key != known.key  # a cached list of the old history is stale
        assert cache.refresh()  # the store's fingerprint moved: every cache entry dropped
    finally:
        cache.close()
        log.close()


@pytest.mark.parametrize("append", [False, True])
def test_user_histories_follow_ingest(tmp_path, ratings_csv, append):
    db = tmp_path / "s.duckdb"
    ingest(db, loaders.load("csv", ratings_csv))
    more = make_interactions(
        pd.Series(["u2", "u9"]), pd.Series(["z", "y"]), timestamp=pd.Series([10**6, 5])
    )
    ingest(db, RawData(more, None, "more"), append=append)
    with open_store(db) as s:
        want = StoreBase.histories(s, s.user_ids())  # read from the interactions themselves
        assert want == {u: s.history(u) for u in s.user_ids()} == s.histories(s.user_ids())
        assert s.history("u9") == ["y"] and s.history("u2") == (
            ["a", "c", "d", "z"] if append else ["z"]
        )
        assert s.histories(["u9", "nobody"]) == {"u9": ["y"]}


def test_a_store_written_before_the_history_table_still_reads_and_gains_it(tmp_path):
    import duckdb

    db = tmp_path / "s.duckdb"
    ingest(db, _raw(n_users=6))
    with open_store(db) as s:
        want = {u: s.history(u) for u in s.user_ids()}
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE user_histories")
    con.execute("DROP TABLE forgotten")
    con.close()
    with open_store(db) as s:  # read-only: the interactions answer
        assert {u: s.history(u) for u in s.user_ids()} == want and s.forgotten() == set()
    with open_store(db, read_only=False) as s:  # a writer adds the tables
        assert s.forget(WHO)["interactions"] > 0
    with open_store(db) as s:
        want.pop(WHO)
        assert s._has("user_histories") and {u: s.history(u) for u in s.user_ids()} == want
        assert s.forgotten() == {user_hash(WHO)}
