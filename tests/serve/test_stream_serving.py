"""A running service over a PostgreSQL store sees streamed interactions in the next list:
the consumer appends rows while the service serves, and the service notices each user's
new rows (one indexed lookup per read), cached lists included."""

from __future__ import annotations

import shutil

from directrec.data.schema import RawData, make_interactions
from directrec.data.store import ingest, open_store
from directrec.data.stream import Consumer, StreamConfig
from tests.serve.conftest import Server


def _ids(res) -> list[str]:
    return [x["item_id"] for x in res.json()["items"]]


def test_streamed_events_show_in_the_next_list(
    world, pg_url, tmp_path, redis_server, r, stream_name
):
    db, reg0 = world
    with open_store(db) as s:
        inter, items = s.interactions(), s.items()
    frame = make_interactions(inter["user_id"], inter["item_id"], timestamp=inter["timestamp"])
    ingest(pg_url, RawData(frame, items))
    reg = tmp_path / "registry"
    shutil.copytree(reg0, reg)
    s = Server(reg, pg_url)
    try:
        first = s.client.get("/v1/users/u9/recommendations")
        again = s.client.get("/v1/users/u9/recommendations")
        assert again.json() == first.json()  # served from the list cache
        top, used = _ids(first)[0], first.json()["history_used"]
        assert s.client.get("/v1/users/newcomer/recommendations").status_code == 404
        r.xadd(stream_name, {"user_id": "u9", "item_id": top, "timestamp": "2000000000"})
        r.xadd(stream_name, {"user_id": "newcomer", "item_id": top, "timestamp": "2000000000"})
        cfg = StreamConfig(redis_server.url, stream_name, block_ms=50)
        c = Consumer(cfg, pg_url)
        assert c.run(idle_exit=0.2).stored == 2
        c.close()
        after = s.client.get("/v1/users/u9/recommendations")  # the very next request
        assert after.json()["history_used"] == used + 1 and top not in _ids(after)
        assert s.client.get("/v1/users/u9").json()["history"][0]["item_id"] == top
        assert s.client.get("/v1/users/newcomer/recommendations").status_code == 200
    finally:
        log = s.stop()
    assert "Traceback" not in log, log[-3000:]
