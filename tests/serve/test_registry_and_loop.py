"""Registry integrity, hot swaps that never fail a request, and the closed loop:
feedback → `directrec update` → the served list follows the new preference."""

from __future__ import annotations

import shutil
import threading

import pytest
from typer.testing import CliRunner

from directrec.cli import app
from directrec.serve import registry
from tests.serve.conftest import TOKEN, Server, train_into

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def test_publish_verify_and_reject_tampering(own_world, tmp_path):
    _, reg = own_world
    v = registry.current(reg)
    registry.verify(reg / v)
    bad = tmp_path / "bad"
    shutil.copytree(reg / v, bad)
    (bad / "manifest.json").unlink()
    v2 = registry.publish(bad, reg, make_current=False)
    registry.verify(reg / v2)  # a fresh manifest for the copied files
    with open(reg / v2 / "weights.safetensors", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="sha256"):
        registry.verify(reg / v2)
    with pytest.raises(ValueError, match="sha256"):
        registry.set_current(reg, v2)
    assert registry.current(reg) == v
    with pytest.raises(ValueError, match="not a directrec model"):
        registry.publish(tmp_path / "nothing", reg)


def test_swaps_under_load_fail_no_request_and_bad_artefacts_are_rejected(own_world):
    db, reg = own_world
    v1 = registry.current(reg)
    s = Server(reg, db)
    stop = threading.Event()
    failures: list[str] = []
    versions: set[str] = set()

    def hammer() -> None:
        import httpx

        with httpx.Client(base_url=s.url, timeout=30) as c:
            while not stop.is_set():
                r = c.get("/v1/users/u5/recommendations", params={"k": 5})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                versions.add(r.headers["X-Model-Version"])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        v2 = train_into(db, reg, seed=1)  # published as CURRENT: the watcher swaps to it
        r = s.client.post("/v1/admin/reload", json={"version": v2}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["model_version"] == v2
        # a truncated artefact: rejected, the old model keeps serving
        broken = registry.publish(reg / v1, reg, make_current=False)
        with open(reg / broken / "weights.safetensors", "r+b") as f:
            f.truncate(1000)
        r = s.client.post("/v1/admin/reload", json={"version": broken}, headers=ADMIN)
        assert r.status_code == 409 and "sha256" in r.json()["error"]["message"]
        r = s.client.post("/v1/admin/reload", json={"version": "v9999"}, headers=ADMIN)
        assert r.status_code == 409
        r = s.client.post("/v1/admin/reload", json={"version": v1}, headers=ADMIN)
        assert r.status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
        log = s.stop()
    assert not failures, failures[:3]
    assert {v1, v2} <= versions, log[-2000:]


def test_closed_loop_feedback_update_changes_the_served_list(own_world):
    db, reg = own_world
    s = Server(reg, db)
    try:
        c = s.client
        v1 = c.get("/readyz").json()["model_version"]
        # u0 loved topic 0; now they take to the football cluster (topic 2: i40..i59)
        events = [
            {
                "user_id": "u0",
                "item_id": f"i{40 + n}",
                "type": "like",
                "timestamp": 2_000_000_000 + n,
                "idempotency_key": f"loop-{n}",
            }
            for n in range(12)
        ]
        assert c.post("/v1/feedback", json={"events": events}).json()["stored"] == 12
        res = CliRunner().invoke(
            app, ["update", "--model", str(reg), "--db", str(db), "--epochs", "3"]
        )
        assert res.exit_code == 0, res.output
        v2 = registry.current(reg)
        assert v2 != v1 and "new_users=0" in res.output
        r = c.post("/v1/admin/reload", json={}, headers=ADMIN)
        assert r.json()["model_version"] == v2
        recs = c.get("/v1/users/u0/recommendations", params={"k": 10})
        assert recs.headers["X-Model-Version"] == v2
        ids = [it["item_id"] for it in recs.json()["items"]]
        football = [i for i in ids if 40 <= int(i[1:]) < 60]
        assert len(football) >= 5, ids
    finally:
        s.stop()
