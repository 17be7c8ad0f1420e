"""`directrec stream` on the command line: events in (counted by `info`), dead letters,
and continuous learning: `update` after N new events through the gate, a rejected update
leaving CURRENT where it was."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from directrec.cli import app
from directrec.data.dataset import Dataset
from directrec.data.schema import RawData, make_interactions
from directrec.data.store import ingest, open_store
from directrec.models import create
from directrec.models.ease import EASE
from directrec.models.pop import MostPopular
from directrec.serve import registry
from tests.conftest import planted_frames


@pytest.fixture()
def served(tmp_path):
    """A store and a registry serving EASE fitted on it (its watermark recorded)."""
    inter, items = planted_frames(n_users=120)
    db = tmp_path / "store.duckdb"
    frame = make_interactions(inter["user_id"], inter["item_id"], timestamp=inter["timestamp"])
    ingest(db, RawData(frame, items))
    ds = Dataset.from_store(db)
    model = create("ease").fit(ds.interactions)
    with open_store(db) as s:
        seq = s.last_seq()
    model.meta.update(user_ids=ds.users.ids.tolist(), item_ids=ds.items.ids.tolist(), store_seq=seq)
    reg = tmp_path / "registry"
    registry.publish(model.save(tmp_path / "m"), reg)
    return db, reg


def likes(r, stream: str) -> None:
    """Users u0..u29 each take two more items of their own cluster (u % 6, 20 items)."""
    for u in range(30):
        for j in (17, 19):
            fields = {"user_id": f"u{u}", "item_id": f"i{(u % 6) * 20 + j}"}
            r.xadd(stream, {**fields, "timestamp": str(2_000_000_000 + 10 * u + j)})


def run_stream(db, redis_server, stream: str, *extra: str):
    args = ["stream", "--db", str(db), "--source", redis_server.url, "--stream", stream]
    return CliRunner().invoke(app, [*args, "--idle-exit", "0.5", *extra])


def outcomes(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_stream_counts_in_info_and_updates_after_n_events(served, redis_server, r, stream_name):
    db, reg = served
    before = registry.current(reg)
    likes(r, stream_name)
    r.xadd(stream_name, {"user_id": "u1", "item_id": "i1", "timestamp": "soon"})
    gate = ["--min-gate-users", "10", "--epochs", "1"]
    res = run_stream(
        db, redis_server, stream_name, "--update", str(reg), "--update-every", "60", *gate
    )
    assert res.exit_code == 0, res.output
    update, totals = outcomes(res.output)
    assert update["published"] and update["update"] == registry.current(reg) != before
    assert update["gate"] == "compared" and update["gate_users"] == 30
    assert (totals["stored"], totals["dead"]) == (60, 1)
    info = CliRunner().invoke(app, ["info", "--db", str(db)])
    with open_store(db) as s:
        assert json.loads(info.output)["interactions"] == s.counts()["interactions"]
        assert s._rows("SELECT count(*) FROM stream_keys")[0][0] == 60


def test_a_rejected_update_leaves_current_and_the_stream_goes_on(
    served, redis_server, r, stream_name, monkeypatch
):
    db, reg = served
    before = registry.current(reg)
    # A deliberately worse update: popularity in place of a refit EASE.
    monkeypatch.setattr(EASE, "update", lambda self, data, *a, **k: MostPopular().fit(data))
    likes(r, stream_name)
    gate = ["--min-gate-users", "10", "--epochs", "1"]
    res = run_stream(
        db,
        redis_server,
        stream_name,
        "--update",
        str(reg),
        "--update-every",
        "30",
        "--batch",
        "30",
        *gate,
    )
    assert res.exit_code == 0, res.output
    *updates, totals = outcomes(res.output)
    assert totals["stored"] == 60 and updates  # consumed everything despite the rejection
    assert all(u["update"] is None and not u["published"] for u in updates)
    assert "below the served version" in updates[0]["reason"]
    assert registry.current(reg) == before


def test_stream_refuses_bad_options(served, redis_server, stream_name):
    db, reg = served
    res = run_stream(db, redis_server, stream_name, "--update", str(reg))
    assert res.exit_code == 2 and "--update-every" in res.output
    res = run_stream(db, redis_server, stream_name, "--update-every", "5")
    assert res.exit_code == 2 and "--update REGISTRY" in res.output
    res = CliRunner().invoke(app, ["stream", "--db", str(db), "--source", "localhost:6379"])
    assert res.exit_code == 2 and "redis:// URL" in res.output
    res = run_stream(db.with_name("nowhere.duckdb"), redis_server, stream_name)
    assert res.exit_code == 2 and "store not found" in res.output
