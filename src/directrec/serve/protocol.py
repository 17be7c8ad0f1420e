"""uvicorn's httptools protocol with a header read timeout, which uvicorn lacks: a
connection that opens and sends nothing, or sends its request line and headers a byte at a
time, is answered 408 and closed once `header_timeout` seconds pass without the headers
being complete. (The body's own deadline is enforced where the body is read, middleware.py.)

It also sheds at parse time: when the app's admission gate (middleware.Gate) is full, by
its count or by its wait bound, a request for a heavy path gets the pre-built 503 written
from the header callback itself, with no ASGI task, scope or middleware call. Under 10×
overload most requests are shed, so that path is what the event loop spends its time on;
the ASGI middleware still checks the gate for every request this fast path leaves to it.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

_BODY = b'{"error":{"status":408,"message":"request headers not received in time"}}'
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BODY), _BODY)
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """The timer runs from the connection's start, and from the first byte of each later
    request on a kept-alive connection (uvicorn's keep-alive timeout covers the idle time
    between requests), until the request's headers are complete."""

    def __init__(self, *args: Any, header_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._gate = _find_gate(self.app)
        self._dropping = False  # a shed request's remaining body: parsed and dropped

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        # Answer only when no response of an earlier request is being written.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_TIMED_OUT)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._dropping = False
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        if self._shed_now():
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._dropping:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._dropping:
            super().on_message_complete()

    def _shed_now(self) -> bool:
        """Answer 503 from here when the gate is full and the request is for a heavy path
        (its path as sent, not percent-decoded: an encoded one is left to the middleware,
        which sheds it all the same). Only when no earlier response is still being written
        (pipelining) and not for HEAD, whose answer has no body."""
        gate = self._gate
        if gate is None or not gate.saturated():
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False
        method = self.parser.get_method()
        if method == b"HEAD" or self.parser.should_upgrade():
            return False
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        if not gate.full(path):
            return False
        # A body may follow: it is parsed and dropped, and the connection closes rather
        # than wait for a body that may trickle in (no body deadline runs without a task).
        body = any(
            k == b"transfer-encoding" or (k == b"content-length" and v.strip() != b"0")
            for k, v in self.headers
        )
        keep = not body and self.parser.should_keep_alive()
        head = [STATUS_LINE[503]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        for name, value in gate.shed_headers:
            head += [name, b": ", value, b"\r\n"]
        if not keep:
            head.append(b"connection: close\r\n")
        head += [b"\r\n", gate.shed_body]
        self.transport.write(b"".join(head))
        gate.shed(path, method.decode("latin-1"))
        self._dropping = True
        if keep:
            self.on_response_complete()  # arms the keep-alive timer, starts a pipelined one
        else:
            self.transport.close()
        return True


def _find_gate(app: Any) -> Any:
    """The admission gate of the app uvicorn serves (`app.state.gate`, set by create_app),
    looked through uvicorn's own wrappers (each keeps the app it wraps as `.app`)."""
    for _ in range(8):
        gate = getattr(getattr(app, "state", None), "gate", None)
        if gate is not None or not hasattr(app, "app"):
            return gate
        app = app.app
    return None


def protocol_with(header_timeout: float) -> Any:
    """The protocol to pass as `uvicorn.run(http=...)`: a partial (not a class made on the
    fly) so that `--workers N` can pickle it into each worker process."""
    return functools.partial(HeaderTimeoutProtocol, header_timeout=header_timeout)
