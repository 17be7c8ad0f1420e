"""Pure ASGI layers in front of the routes: admission control (shed before any parsing),
request metrics and the model-version header, and a request-body size limit.

They run before FastAPI parses anything, so a shed request costs one counter check and a
pre-built 503, not a JSON parse and a route lookup.
"""

from __future__ import annotations

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


class Admission:
    """Counts requests in flight on the heavy paths and answers 503 + Retry-After at once
    beyond `max_inflight`, before the body is read. Every response gets the served model's
    version header and is counted in the metrics."""

    def __init__(self, app: Any, service: Any, max_inflight: int) -> None:
        self.app, self.svc, self.max_inflight = app, service, max_inflight
        self.inflight = 0
        shed = error_response(503, "overloaded; retry shortly")
        shed.headers["Retry-After"] = "1"
        # The 503 is sent as two pre-built ASGI messages: no response object per request.
        self._shed_start = {
            "type": "http.response.start",
            "status": 503,
            "headers": list(shed.raw_headers),
        }
        self._shed_body = {"type": "http.response.body", "body": bytes(shed.body)}
        self._counters: dict[tuple[str, str, str], Any] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path, metrics = scope["path"], self.svc.metrics
        status = 500
        heavy = path.startswith(SHED_PATHS)
        if heavy and self.inflight >= self.max_inflight:
            metrics.shed.inc()
            await send(self._shed_start)
            await send(self._shed_body)
            self._count(route_label(path), scope["method"], "503")
            return
        loaded = self.svc.loaded

        async def send_with_headers(msg: dict) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
                headers = list(msg.get("headers", []))
                if loaded is not None and not any(k == b"x-model-version" for k, _ in headers):
                    headers.append((b"x-model-version", loaded.version.encode()))
                msg = {**msg, "headers": headers}
            await send(msg)

        if heavy:
            self.inflight += 1
            metrics.inflight.set(self.inflight)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if heavy:
                self.inflight -= 1
                metrics.inflight.set(self.inflight)
            label = route_label(path)
            self._count(label, scope["method"], str(status))
            metrics.latency.labels(label).observe(time.perf_counter() - start)

    def _count(self, route: str, method: str, status: str) -> None:
        """Count a response (bound metric children cached: no label lookup per request)."""
        key = (route, method[:16], status)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = self.svc.metrics.requests.labels(*key)
        child.inc()


class BodyLimit:
    """413 for bodies over `limit` bytes, by Content-Length or by counting a streamed
    body, before the app reads it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    too_big = int(v) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    resp = error_response(413, f"request body over {self.limit} bytes")
                    return await resp(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await error_response(413, f"request body over {self.limit} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass
