"""The pure ASGI layer in front of the routes: admission control (shed before any
parsing), the request body read whole under a size limit and a deadline, request metrics
and the model-version header.

It runs before FastAPI parses anything, so a shed request costs one counter check and a
pre-built 503, not a JSON parse and a route lookup. The count lives in a `Gate` the HTTP
protocol reads too (protocol.py): there a request that would be shed is answered from the
parser's callback, with no ASGI task at all, which is what keeps 503s fast at 10× load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from directrec.serve.schemas import error_response

ROUTES = {
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/favicon.ico",
    "/v1/users",
    "/v1/users/{id}",
    "/v1/users/{id}/recommendations",
    "/v1/recommendations",
    "/v1/feedback",
    "/v1/items/{id}",
    "/v1/items",
    "/v1/admin/reload",
    "/v1/admin/update",
    "/v1/admin/jobs/{id}",
    "/v1/admin/forget",
}
SHED_PATHS = ("/v1/users", "/v1/recommendations", "/v1/feedback", "/v1/items")


def route_label(path: str) -> str:
    """A bounded label for metrics (ids collapsed), 'other' for anything unknown."""
    if path.startswith("/v1/users/"):
        path = (
            "/v1/users/{id}/recommendations"
            if path.endswith("/recommendations")
            else "/v1/users/{id}"
        )
    elif path.startswith("/v1/items/"):
        path = "/v1/items/{id}"
    elif path.startswith("/v1/admin/jobs/"):
        path = "/v1/admin/jobs/{id}"
    return path if path in ROUTES else "other"


class Gate:
    """The admission count shared by the ASGI middleware and the HTTP protocol: requests
    holding a slot on the heavy paths, the bound, the pre-built 503 and its metrics.

    Two bounds, both checked when a request arrives: `max_inflight` requests at most, and
    (when `max_wait` > 0 seconds) no more than the model serves within `max_wait` at its
    recent pace: a request that would wait longer (the model's recent wall time for a
    batch of those in flight, Batcher.expected_wait) is shed at once. The second bound
    follows the machine: when the core is shared, or a batch of long histories is slow,
    fewer are admitted, so an admitted request's latency stays near `max_wait` plus its
    own batch, not `max_inflight` ÷ whatever throughput is left."""

    def __init__(self, service: Any, max_inflight: int, max_wait: float = 0.0) -> None:
        self.svc, self.max_inflight, self.max_wait = service, max_inflight, max_wait
        self.inflight = 0
        shed = error_response(503, "overloaded; retry shortly")
        shed.headers["Retry-After"] = "1"
        self.shed_headers = list(shed.raw_headers)
        self.shed_body = bytes(shed.body)
        self._counters: dict[tuple[str, str, str], Any] = {}

    def saturated(self) -> bool:
        """True when either bound is reached: a request for a heavy path is shed now."""
        if self.inflight >= self.max_inflight:
            return True
        if self.max_wait > 0 and self.inflight:
            batcher = getattr(self.svc, "batcher", None)
            return batcher is not None and batcher.expected_wait(self.inflight) > self.max_wait
        return False

    def full(self, path: str) -> bool:
        """True when a request for `path` must be shed now."""
        return path.startswith(SHED_PATHS) and self.saturated()

    def take(self) -> None:
        self.inflight += 1
        self.svc.metrics.inflight.set(self.inflight)

    def give(self) -> None:
        self.inflight -= 1
        self.svc.metrics.inflight.set(self.inflight)

    def shed(self, path: str, method: str) -> None:
        """Count a shed request (its 503 is sent by the caller)."""
        self.svc.metrics.shed.inc()
        self.count(route_label(path), method, "503")

    def count(self, route: str, method: str, status: str) -> None:
        """Count a response (bound metric children cached: no label lookup per request)."""
        key = (route, method[:16], status)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = self.svc.metrics.requests.labels(*key)
        child.inc()


class Admission:
    """Counts requests in flight on the heavy paths and answers 503 + Retry-After at once
    beyond `max_inflight`, before the body is read. Every response gets the served model's
    version header and is counted in the metrics.

    The body is read whole, within `max_body` bytes (else 413) and `body_timeout` seconds
    (else 408 and the connection closes), BEFORE a request takes its slot: a slot stands
    for work on the model, so a client trickling its body in holds only its own
    connection, never the capacity every other client is served from."""

    def __init__(
        self,
        app: Any,
        service: Any,
        max_inflight: int,
        max_body: int = 1 << 20,
        body_timeout: float = 10.0,
        gate: Gate | None = None,
    ) -> None:
        self.app, self.svc = app, service
        self.gate = gate if gate is not None else Gate(service, max_inflight)
        self.max_body, self.body_timeout = max_body, body_timeout
        # The 503 is sent as two pre-built ASGI messages: no response object per request.
        self._shed_start = {
            "type": "http.response.start",
            "status": 503,
            "headers": self.gate.shed_headers,
        }
        self._shed_body = {"type": "http.response.body", "body": self.gate.shed_body}

    @property
    def inflight(self) -> int:
        return self.gate.inflight

    @inflight.setter
    def inflight(self, n: int) -> None:
        self.gate.inflight = n

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path, metrics, gate = scope["path"], self.svc.metrics, self.gate
        heavy = path.startswith(SHED_PATHS)
        if gate.full(path):
            return await self._shed(path, scope["method"], send)
        loaded = self.svc.loaded
        status = 500

        async def send_with_headers(msg: dict) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
                headers = list(msg.get("headers", []))
                if loaded is not None and not any(k == b"x-model-version" for k, _ in headers):
                    headers.append((b"x-model-version", loaded.version.encode()))
                msg = {**msg, "headers": headers}
            await send(msg)

        label = route_label(path)
        try:
            body = await self._read_body(scope, receive)
        except _Refused as e:
            resp = error_response(e.status, e.message)
            if e.status == 408:  # the rest of the body may still trickle in: drop it all
                resp.headers["Connection"] = "close"
            await resp(scope, receive, send_with_headers)
            gate.count(label, scope["method"], str(e.status))
            return
        except _Gone:
            return
        # The body took a while, maybe: the slots may have filled meanwhile.
        if gate.full(path):
            return await self._shed(path, scope["method"], send)

        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only a disconnect is left to hear

        if heavy:
            gate.take()
        try:
            await self.app(scope, replay, send_with_headers)
        finally:
            if heavy:
                gate.give()
            gate.count(label, scope["method"], str(status))
            metrics.latency.labels(label).observe(time.perf_counter() - start)

    async def _shed(self, path: str, method: str, send: Callable) -> None:
        self.gate.shed(path, method)
        await send(self._shed_start)
        await send(self._shed_body)

    async def _read_body(self, scope: dict, receive: Callable) -> bytes:
        """The whole request body: _Refused when over the size limit (by Content-Length
        before reading, or by counting) or not complete within the deadline."""
        too_big = _Refused(413, f"request body over {self.max_body} bytes")
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    if int(v) > self.max_body:
                        raise too_big
                except ValueError:
                    raise too_big from None
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        raise _Gone
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise too_big
                    chunks.append(chunk)
                    if not msg.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise _Refused(408, "request body not received in time") from None


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _Gone(Exception):
    """The client disconnected before its body was complete."""
