"""The list cache (hits, and never a stale list after acknowledged feedback, a swap or a
forget), and `serve --workers 2` on a PostgreSQL store: shared feedback log, idempotency
across processes, hot swaps and forgetting reach every worker."""

from __future__ import annotations

import shutil
import time

import httpx

from directrec.data.schema import RawData, make_interactions
from directrec.data.store import ingest, open_store
from directrec.serve import registry
from tests.serve.conftest import TOKEN, Server, train_into

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def ids(r: httpx.Response) -> list[str]:
    return [it["item_id"] for it in r.json()["items"]]


def wait_for(check, seconds: float = 30.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_list_cache_hits_and_never_serves_a_stale_list(own_world):
    db, reg = own_world
    s = Server(reg, db)
    try:
        c = s.client
        path = "/v1/users/u5/recommendations"
        r1 = c.get(path)
        assert r1.status_code == 200 and r1.headers["X-Cache"] == "miss"
        r2 = c.get(path)
        assert r2.headers["X-Cache"] == "hit" and r2.content == r1.content
        assert c.get(path, params={"k": 5}).headers["X-Cache"] == "miss"  # options are keys
        # Feedback, once acknowledged, is in the very next list: never the cached one.
        top = ids(r1)[0]
        like = {"user_id": "u5", "item_id": top, "type": "like"}
        fb = c.post("/v1/feedback", json={"events": [like]})
        assert fb.status_code == 200 and fb.json()["stored"] == 1
        r3 = c.get(path)
        assert r3.headers["X-Cache"] == "miss" and top not in ids(r3)
        assert r3.json()["history_used"] == r1.json()["history_used"] + 1
        assert c.get(path).headers["X-Cache"] == "hit"
        metrics = c.get("/metrics").text
        assert 'directrec_list_cache_total{result="hit"} 2.0' in metrics
        assert "directrec_list_cache_hit_ratio 0.4" in metrics  # 2 hits of 5 lookups
        # A swap: the new version's lists are generated, not the old version's.
        v2 = train_into(db, reg, seed=1)
        wait_for(lambda: c.get("/readyz").json()["model_version"] == v2)
        r4 = c.get(path)
        assert r4.headers["X-Cache"] == "miss" and r4.headers["X-Model-Version"] == v2
        assert c.get(path).headers["X-Cache"] == "hit"
        # Forget: gone from the store, the feedback log and every cache.
        r = c.post("/v1/admin/forget", json={"user_id": "u5"}, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert (
            r.json()["deleted"]["interactions"] > 0 and r.json()["deleted"]["feedback_events"] == 1
        )
        assert c.get(path).status_code == 404 and c.get("/v1/users/u5").status_code == 404
        assert c.post("/v1/admin/forget", json={"user_id": "u5"}).status_code == 401
    finally:
        s.stop()
    with open_store(db) as store:
        assert set(store.user_rows("u5").values()) == {0}


def test_two_workers_share_a_postgres_store(world, pg_url, tmp_path):
    db, reg0 = world
    with open_store(db) as s:
        inter, items = s.interactions(), s.items()
    frame = make_interactions(
        inter["user_id"], inter["item_id"], timestamp=inter["timestamp"], rating=inter["rating"]
    )
    ingest(pg_url, RawData(frame, items))
    reg = tmp_path / "registry"
    shutil.copytree(reg0, reg)
    s = Server(reg, pg_url, "--workers", "2")

    def fresh(method: str, path: str, **kw) -> httpx.Response:
        with httpx.Client(base_url=s.url, timeout=30) as c:  # a new connection each time
            return c.request(method, path, **kw)

    try:
        workers: set[int] = set()
        for _ in range(400):
            workers.add(fresh("GET", "/readyz").json()["worker"])
            if len(workers) == 2:
                break
        assert len(workers) == 2, "requests never reached a second worker"

        before = fresh("GET", "/v1/users/u9").json()["interactions"]
        event = {"user_id": "u9", "item_id": "i3", "type": "like", "idempotency_key": "once"}
        posts = [fresh("POST", "/v1/feedback", json={"events": [event]}) for _ in range(8)]
        results = [p.json()["stored"] for p in posts]
        assert sum(results) == 1  # one key, stored once, whichever worker took it
        with open_store(pg_url) as store:
            assert store._rows("SELECT count(*) FROM feedback_events")[0][0] == 1
        for _ in range(20):  # every worker's list reflects it (no stale cache anywhere)
            r = fresh("GET", "/v1/users/u9/recommendations")
            assert r.json()["history_used"] == before + 1 and "i3" not in ids(r)

        v2 = train_into(db, reg, seed=1)  # publishing makes it CURRENT: every worker swaps
        wait_for(
            lambda: all(fresh("GET", "/readyz").json()["model_version"] == v2 for _ in range(10))
        )
        assert registry.current(reg) == v2

        r = fresh("POST", "/v1/admin/forget", json={"user_id": "u9"}, headers=ADMIN)
        assert r.status_code == 200, r.text
        gone = "/v1/users/u9/recommendations"
        wait_for(lambda: all(fresh("GET", gone).status_code == 404 for _ in range(10)))
    finally:
        log = s.stop()
    assert "Traceback" not in log, log[-3000:]
