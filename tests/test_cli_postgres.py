"""Every `--db` command on a PostgreSQL URL, against a real server the tests start:
ingest (and its errors), info, benchmark, train, evaluate, recommend, generate, update
and forget — the same commands a DuckDB user runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from directrec.data.store import open_store
from directrec.serve.feedback import Event, open_feedback
from tests.conftest import planted_frames
from tests.test_cli import run


@pytest.fixture()
def pg_store(pg_url, tmp_path):
    inter, items = planted_frames(n_users=120)
    inter[["user_id", "item_id", "timestamp", "rating"]].to_csv(tmp_path / "log.csv", index=False)
    items.assign(categories=items["categories"].map("|".join)).to_csv(
        tmp_path / "items.csv", index=False
    )
    res = run(
        "ingest",
        "--interactions",
        tmp_path / "log.csv",
        "--items",
        tmp_path / "items.csv",
        "--columns",
        "rating=rating",
        "--db",
        pg_url,
    )
    assert res.exit_code == 0, res.output
    assert "120 users" in res.output
    return pg_url, tmp_path


def test_every_store_command_on_postgres(pg_store):
    db, d = pg_store
    info = json.loads(run("info", "--db", db).output)
    assert info["users"] == 120 and len(info["fingerprint"]) == 16

    bench = ("benchmark", "--db", db, "--models", "pop,ease", "--k", "10", "--no-isolate")
    res = run(*bench, "--out", d / "b")
    assert res.exit_code == 0, res.output
    results = json.loads((d / "b" / "results.json").read_text())
    by = {r["model"]: r for r in results["results"]}
    assert by["ease"]["metrics"]["ndcg@10"] > by["pop"]["metrics"]["ndcg@10"]

    assert run("train", "ease", "--db", db, "--out", d / "m").exit_code == 0
    res = run("evaluate", "--model", d / "m", "--db", db)
    assert res.exit_code == 0, res.output
    res = run("recommend", "--model", d / "m", "--db", db, "--user", "u3", "--k", "5", "--json")
    assert res.exit_code == 0 and len(json.loads(res.output)["items"]) == 5

    res = run("generate", "--model", d / "m", "--db", db, "--k", "5", "--out", d / "recs.parquet")
    assert res.exit_code == 0, res.output
    recs = pd.read_parquet(d / "recs.parquet")
    assert recs["user_id"].nunique() == 120 and (recs.groupby("user_id").size() == 5).all()

    # update: feedback lives in the store's own table; the update learns from it.
    reg = d / "reg"
    assert run("publish", "--model", d / "m", "--registry", reg).exit_code == 0
    log = open_feedback(db)
    log.add([Event("u3", "i5", "like", 2e9, key="k1"), Event("new", "i7", "like", 2e9, key="k2")])
    log.close()
    res = run("update", "--model", reg, "--db", db, "--min-gate-users", "1000")
    assert res.exit_code == 0, res.output
    assert "published" in res.output

    res = run("forget", "--user", "u3", "--db", db)
    assert res.exit_code == 0, res.output
    assert "forgot user 'u3'" in res.output and "1 feedback_events" in res.output
    with open_store(db) as s:
        assert set(s.user_rows("u3").values()) == {0}
        assert s.counts()["users"] == 119 + 0  # 'new' came only through feedback


def test_bad_input_on_postgres_names_file_line_field(pg_store, tmp_path):
    db, _ = pg_store
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\nu1,i1,10\nu1,i2,notatime\n")
    res = run("ingest", "--interactions", bad, "--db", db, "--append")
    assert res.exit_code == 2
    assert "bad.csv:3" in res.output and "timestamp" in res.output
    assert json.loads(run("info", "--db", db).output)["users"] == 120  # untouched
    res = run("info", "--db", "postgresql://nobody:pw@127.0.0.1:1/none")
    assert res.exit_code == 2 and "cannot connect" in res.output and "pw@" not in res.output
