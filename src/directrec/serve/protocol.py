"""uvicorn's httptools protocol with a header read timeout, which uvicorn lacks: a
connection that opens and sends nothing, or sends its request line and headers a byte at a
time, is answered 408 and closed once `header_timeout` seconds pass without the headers
being complete. (The body's own deadline is enforced where the body is read, middleware.py.)
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()


def protocol_with(header_timeout: float) -> Any:
    """The protocol to pass as `uvicorn.run(http=...)`: a partial (not a class made on the
    fly) so that `--workers N` can pickle it into each worker process."""
    return functools.partial(HeaderTimeoutProtocol, header_timeout=header_timeout)
