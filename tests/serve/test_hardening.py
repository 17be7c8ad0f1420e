"""Serving hardening: shedding before any parsing, a supervised batching loop, bounded
history memory, background update jobs, constant-time admin tokens."""

from __future__ import annotations

import asyncio
import fcntl
import time
from pathlib import Path

import pytest

from directrec.serve.batcher import Batcher, BatchFailed
from directrec.serve.caches import HistoryCache
from directrec.serve.feedback import Event, FeedbackLog
from directrec.serve.middleware import Admission
from directrec.serve.service import Metrics
from tests.serve.conftest import TOKEN, Server

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


class _Svc:
    def __init__(self) -> None:
        self.metrics, self.loaded = Metrics(), None


def test_admission_sheds_before_reading_the_body():
    """Beyond max_inflight the 503 goes out without calling the app or reading a byte."""
    called, read = [], []

    async def app(scope, receive, send):  # pragma: no cover - must not run
        called.append(1)

    async def receive():
        read.append(1)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent: list[dict] = []

    async def send(msg):
        sent.append(msg)

    gate = Admission(app, _Svc(), max_inflight=2)
    gate.inflight = 2
    scope = {"type": "http", "path": "/v1/recommendations", "method": "POST", "headers": []}
    asyncio.run(gate(scope, receive, send))
    assert not called and not read
    assert sent[0]["status"] == 503 and (b"retry-after", b"1") in sent[0]["headers"]
    gate.inflight = 0  # light paths and an idle gate pass through
    asyncio.run(gate({**scope, "path": "/healthz", "method": "GET"}, receive, send))
    assert called == [1]


def test_batcher_fails_only_the_bad_batch_and_times_out_waiters():
    async def scenario():
        def run(jobs):
            if "boom" in jobs:
                raise RuntimeError("model exploded")
            if "slow" in jobs:
                time.sleep(3.0)
            return [f"ok:{j}" for j in jobs]

        b = Batcher(run, max_batch=1, max_wait=0.0, timeout=1.0)  # margins for a busy machine
        b.start()
        with pytest.raises(BatchFailed, match="model exploded"):
            await b.submit("boom")
        assert await b.submit("fine") == "ok:fine" and b.alive  # the loop kept running
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError):
            await b.submit("slow")  # waits no longer than the timeout
        assert time.perf_counter() - t0 < 2.5
        await asyncio.sleep(2.5)  # the slow batch finishes; the loop takes the next one
        assert await b.submit("again") == "ok:again"
        await b.stop()
        assert not b.alive

    asyncio.run(scenario())


def test_history_cache_is_bounded_and_follows_feedback(world, tmp_path):
    db, _ = world
    log = FeedbackLog(tmp_path / "fb.sqlite")
    cache = HistoryCache(db, log, size=5)
    try:
        first = cache.get("u1")
        assert first is not None and len(first.items) > 5 and first.version == 0
        for n in range(200):  # a flood of unknown users caches nothing
            assert cache.get(f"nobody-{n}") is None
        for u in range(2, 20):
            cache.get(f"u{u}")
        assert len(cache.cache) == 5
        before = cache.get("u19")
        # Feedback written to the log by anyone (here: another "worker", not this cache)
        # is seen by the next read, which carries a new version.
        log.add([Event("u19", "i0", "like", 2e9, key="k1")])
        after = cache.get("u19")
        assert after.items[-1] == "i0" and after.version > before.version
        assert cache.reads == 19 + 200  # applied from the log, the store was not read again
        log.add([Event("u1", "i3", "dislike", 2e9, key="k2")])  # u1 was evicted: re-read
        assert "i3" in cache.get("u1").dislikes
        log.forget("u19")  # its events are gone: the entry is rebuilt without them
        assert "i0" not in cache.get("u19").items[-1:]
    finally:
        cache.close()
        log.close()


def _held(lock: Path) -> bool:
    """Whether some process holds the registry's job lock (a job is running)."""
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _wait(c, job: str) -> dict:
    deadline = time.time() + 300
    while time.time() < deadline:
        got = c.get(f"/v1/admin/jobs/{job}", headers=ADMIN).json()
        if got["status"] != "running":
            return got
        time.sleep(0.2)
    raise AssertionError(f"job {job} still running")


def test_update_runs_as_one_background_job(own_world):
    """One update at a time, across processes: the registry's job lock decides. Both
    refusals are made certain, not left to timing: another process holds the lock for
    the first, and for the second the test sees (through the lock) that the accepted job
    runs from before the second request until after its answer."""
    db, reg = own_world
    s = Server(reg, db)
    lock = reg / ".jobs" / "lock"
    try:
        c = s.client
        assert c.post("/v1/admin/update", json={"epochs": 1}).status_code == 401
        bad = {"Authorization": f"Bearer {TOKEN}x"}
        assert c.post("/v1/admin/update", json={"epochs": 1}, headers=bad).status_code == 401
        # Another worker's job holds the lock: refused, and nothing starts.
        with open(lock, "a+") as other:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            r = c.post("/v1/admin/update", json={"epochs": 1}, headers=ADMIN)
            assert r.status_code == 409 and "already running" in r.text, r.text
        assert not list((reg / ".jobs").glob("*.json"))  # no job was recorded
        # This worker's job: accepted. 50 epochs keep it running for seconds, far longer
        # than one request; the lock shows it ran across the whole second request.
        first = c.post("/v1/admin/update", json={"epochs": 50, "min_gate_users": 0}, headers=ADMIN)
        assert first.status_code == 202, first.text
        job = first.json()["job_id"]
        assert _held(lock)
        second = c.post("/v1/admin/update", json={"epochs": 1}, headers=ADMIN)
        assert _held(lock), "the first job ended during the second request: make it longer"
        assert second.status_code == 409, second.text
        assert job in second.json()["error"]["message"]
        got = _wait(c, job)
        assert got["status"] == "done", got
        assert not _held(lock)  # released: the next update may start
        outcome = got["outcome"]
        assert "published" in outcome and "valid_ndcg@10" in outcome
        if outcome["published"]:
            assert c.get("/readyz").json()["model_version"] == outcome["model_version"]
        assert c.get("/v1/admin/jobs/nope", headers=ADMIN).status_code == 404
    finally:
        s.stop()


def test_page_loads_without_console_errors_and_has_a_favicon(server):
    import shutil

    from playwright import sync_api

    r = server.client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium",
            args=["--no-sandbox", "--headless"],
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))
            page.goto(server.url + "/")
            page.fill("#user", "u4")
            page.click("#load")
            page.wait_for_selector("#recs li")
            labels = page.locator("#recs li button").all_inner_texts()
            assert labels and all(t.strip() in ("Like", "Dislike") for t in labels), labels
        finally:
            browser.close()
    assert not errors, errors
