"""Overload: a full gate is answered from the HTTP parser (no ASGI task), the model thread
runs below the event loop's OS priority, and while the model is busy with the only slot,
sheds and health checks are answered at once."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from directrec.serve.app import create_app
from directrec.serve.batcher import BatchCost, Batcher
from directrec.serve.middleware import Admission, Gate
from directrec.serve.protocol import HeaderTimeoutProtocol, protocol_with
from directrec.serve.service import Metrics, ServeConfig
from tests.serve.conftest import free_port

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice is per thread")
LIST = b"GET /v1/users/1/recommendations?k=5 HTTP/1.1\r\nHost: t\r\n\r\n"


class _Svc:
    def __init__(self) -> None:
        self.metrics, self.loaded = Metrics(), None


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written, self.closed = b"", False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 1234) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _protocol(inflight: int):
    """A protocol serving an app whose gate holds `inflight` of 1 slot, behind uvicorn's
    own proxy-headers wrapper (the gate is found through it)."""
    called = []

    class App:
        def __init__(self) -> None:
            self.state = type("State", (), {})()
            self.state.gate = Gate(_Svc(), max_inflight=1)
            self.state.gate.inflight = inflight

        async def __call__(self, scope, receive, send):  # pragma: no cover - must not run
            called.append(scope["path"])

    app = App()
    loop = asyncio.new_event_loop()
    config = uvicorn.Config(app, http=protocol_with(5.0), log_level="warning")
    config.load()
    proto = HeaderTimeoutProtocol(config, ServerState(), {}, _loop=loop, header_timeout=5.0)
    transport = _Transport()
    proto.connection_made(transport)
    return proto, transport, app.state.gate, called, loop


def test_a_full_gate_is_answered_from_the_parser_without_an_asgi_task():
    proto, transport, gate, called, loop = _protocol(inflight=1)
    try:
        proto.data_received(LIST + LIST)  # two on one kept-alive connection
        replies = transport.written.split(b"HTTP/1.1 ")[1:]
        assert len(replies) == 2 and all(r.startswith(b"503") for r in replies)
        assert b"retry-after: 1" in transport.written.lower()
        assert replies[1].endswith(gate.shed_body) and not transport.closed
        assert not proto.tasks and not called  # no task, the app never ran
        assert proto.timeout_keep_alive_task is not None  # the idle connection stays bounded
        assert gate.svc.metrics.shed._value.get() == 2

        # An empty body keeps the connection; a body closes it (it may trickle in).
        transport.written = b""
        proto.data_received(
            b"POST /v1/recommendations HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
        )
        assert transport.written.startswith(b"HTTP/1.1 503") and not transport.closed
        transport.written = b""
        proto.data_received(
            b"POST /v1/recommendations HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
        )
        assert transport.written.startswith(b"HTTP/1.1 503") and transport.closed
        assert b"connection: close" in transport.written.lower() and not proto.tasks
    finally:
        loop.close()


def test_light_paths_and_a_free_gate_go_to_the_app():
    for inflight, raw in ((1, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"), (0, LIST)):
        proto, transport, _, _, loop = _protocol(inflight)
        try:
            proto.data_received(raw)
            assert transport.written == b"" and len(proto.tasks) == 1
        finally:
            for t in proto.tasks:
                t.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()


@LINUX
def test_the_model_thread_runs_below_the_event_loops_priority():
    def run(jobs):
        return [os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) for _ in jobs]

    async def go():
        b = Batcher(run, max_wait=0.0, nice=5)
        b.start()
        try:
            return await b.submit("job")
        finally:
            await b.stop()

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert asyncio.run(go()) == min(19, mine + 5)


@LINUX
def test_with_idle_the_model_thread_runs_under_sched_idle_and_the_loop_does_not():
    def run(jobs):
        return [os.sched_getscheduler(threading.get_native_id()) for _ in jobs]

    async def go():
        b = Batcher(run, max_wait=0.0, nice=5, idle=True)
        b.start()
        try:
            return await b.submit("job"), os.sched_getscheduler(threading.get_native_id())
        finally:
            await b.stop()

    assert asyncio.run(go()) == (os.SCHED_IDLE, os.SCHED_OTHER)


@LINUX
def test_where_sched_idle_is_refused_the_nice_value_applies(monkeypatch):
    from directrec.serve import batcher

    def refuse(*args):
        raise PermissionError("not here")

    monkeypatch.setattr(batcher.os, "sched_setscheduler", refuse)
    got = []

    def run():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        batcher.lower_priority(3, idle=True)
        got.append((before, os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid)))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    before, after, policy = got[0]
    assert after == min(19, before + 3) and policy == os.SCHED_OTHER


@LINUX
def test_while_the_only_slot_computes_sheds_and_health_checks_answer_at_once(world, monkeypatch):
    """A real uvicorn serving the app with this protocol; the model call takes 2 s."""
    db, reg = world
    app = create_app(ServeConfig(model=reg, db=db, max_inflight=1, watch_seconds=0))
    svc = app.state.service
    started, nice = threading.Event(), []
    real = svc.run_batch

    def slow(jobs):
        nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        started.set()
        time.sleep(2.0)
        return real(jobs)

    svc.run_batch = slow  # the batcher is built at start-up from this attribute
    middleware_sheds = []
    shed = Admission._shed

    async def counted(self, *a):
        middleware_sheds.append(a)
        await shed(self, *a)

    monkeypatch.setattr(Admission, "_shed", counted)
    port = free_port()
    cfg = uvicorn.Config(app, port=port, log_level="warning", http=protocol_with(5.0))
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            user = c.get("/v1/users", params={"k": 1}).json()["users"][0]
            path = f"/v1/users/{user}/recommendations"
            first: list[httpx.Response] = []
            holder = threading.Thread(
                target=lambda: first.append(httpx.get(url + path, timeout=30))
            )
            holder.start()
            assert started.wait(10)
            t = time.perf_counter()
            second = c.get(path)
            shed_s = time.perf_counter() - t
            t = time.perf_counter()
            health = c.get("/healthz")
            health_s = time.perf_counter() - t
            holder.join(30)
        assert second.status_code == 503 and second.headers["retry-after"] == "1"
        assert second.content == app.state.gate.shed_body  # the structured JSON error
        assert not middleware_sheds  # the protocol answered it, not the ASGI middleware
        assert health.status_code == 200
        assert shed_s < 0.5 and health_s < 0.5  # well under the 2 s model call
        assert first and first[0].status_code == 200
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert nice == [min(19, mine + ServeConfig.model_nice)]
    finally:
        server.should_exit = True
        thread.join(30)


class _Paced:
    """A batcher whose model serves each request in `seconds_per_item`, nothing fixed."""

    def __init__(self, seconds_per_item: float) -> None:
        self.seconds_per_item = seconds_per_item

    def expected_wait(self, n: int) -> float:
        return n * self.seconds_per_item


def test_the_wait_bound_sheds_what_the_model_cannot_serve_in_time():
    svc = _Svc()
    svc.batcher = _Paced(0.010)  # the model's recent pace: 10 ms per request
    gate = Gate(svc, max_inflight=100, max_wait=0.025)
    path = "/v1/users/u1/recommendations"
    for inflight, full in ((0, False), (1, False), (2, False), (3, True), (50, True)):
        gate.inflight = inflight
        assert gate.full(path) is full, inflight  # 3 ahead × 10 ms > 25 ms
    assert not gate.full("/healthz")  # light paths are never shed
    svc.batcher = _Paced(0.0004)  # a faster pace admits more at once (50 × 0.4 ms)
    assert not gate.full(path) and gate.inflight == 50
    svc.batcher.seconds_per_item = 0.0  # no batch timed yet: only max_inflight applies
    assert not gate.full(path)
    gate.inflight = 100
    assert gate.full(path)
    off = Gate(_Svc(), max_inflight=100)  # max_wait 0: the count alone
    off.svc.batcher, off.inflight = _Paced(10.0), 99
    assert not off.full(path)


def test_the_wait_bound_also_sheds_from_the_parser():
    """Under the wait bound the gate is full with slots to spare: the parse-time path must
    shed then too, not leave every 503 to an ASGI task."""
    for inflight, shed in ((1, False), (3, True)):  # × 10 ms against a 25 ms bound
        proto, transport, gate, _, loop = _protocol(inflight)
        try:
            gate.max_inflight, gate.max_wait = 100, 0.025
            gate.svc.batcher = _Paced(0.010)
            proto.data_received(LIST)
            if shed:
                assert transport.written.startswith(b"HTTP/1.1 503") and not proto.tasks
                assert gate.svc.metrics.shed._value.get() == 1
            else:
                assert transport.written == b"" and len(proto.tasks) == 1  # the app's
        finally:
            for t in proto.tasks:
                t.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()


def test_the_batcher_keeps_its_recent_wall_time_per_request():
    def run(jobs):
        time.sleep(0.05 + 0.03 * len(jobs))  # 50 ms a call + 30 ms a request
        return jobs

    async def main() -> list[float]:
        b = Batcher(run, max_batch=4, max_wait=0.05)
        b.start()
        waits = [b.expected_wait(1)]
        await b.submit(1)  # a batch of one: 80 ms
        waits.append(b.expected_wait(1))
        await asyncio.gather(*(b.submit(i) for i in range(4)))  # one batch of four: 170 ms
        waits.append(b.expected_wait(8))  # two calls of four
        parts = (b.cost.fixed, b.cost.per_item)
        await b.stop()
        return [*waits, *parts]

    first, one, eight, fixed, per_item = asyncio.run(main())
    assert first == 0.0  # nothing timed yet
    assert 0.075 <= one <= 0.3  # one size seen: its time per request
    # two sizes seen: the two parts, and eight requests priced as two calls of four
    assert 0.02 <= fixed <= 0.08 and 0.02 <= per_item <= 0.05
    assert eight == pytest.approx(2 * fixed + 8 * per_item)
    assert 0.25 <= eight <= 0.5  # 2 × 50 + 8 × 30 = 340 ms


def test_the_batch_cost_separates_the_fixed_part_from_the_part_per_request():
    cost = BatchCost()
    assert cost.seconds(5, 32) == 0.0  # nothing measured yet
    for n in (1, 2, 8, 1, 4, 16, 2, 1, 8) * 5:  # 1 ms per call + 1.5 ms per request
        cost.add(n, 0.001 + 0.0015 * n)
    assert cost.fixed == pytest.approx(0.001, rel=1e-6)
    assert cost.per_item == pytest.approx(0.0015, rel=1e-6)
    # a burst of 12 is one batch: 19 ms, not 12 × the ~4.4 ms per request small batches cost
    assert cost.seconds(12, 32) == pytest.approx(0.019)
    assert cost.seconds(40, 32) == pytest.approx(0.002 + 0.060)  # two calls
    same = BatchCost()
    for _ in range(10):  # one batch size only: the parts cannot be told apart
        same.add(4, 0.010)
    assert same.fixed == 0.0 and same.per_item == pytest.approx(0.0025)
    old = BatchCost()
    for n in (1, 4) * 50:
        old.add(n, 0.002 * n)
    for n in (1, 4) * 50:  # the machine got twice as slow: the fit follows
        old.add(n, 0.004 * n)
    assert old.seconds(10, 32) == pytest.approx(0.040, rel=0.05)
