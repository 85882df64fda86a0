"""The gunicorn worker of the `web` process: uvicorn's, with a deadline for reading each request.

APPSEC: uvicorn times out idle keep-alive connections only after a response; a client that
opens a connection and then sends its request line, headers or body a byte at a time (slowloris)
would hold the connection and its buffers forever. Here every request must arrive whole (head
and body) within WEB_REQUEST_READ_TIMEOUT_S (15 s) of its first byte (of the connection, for the
first request), and its head may not exceed MAX_HEAD_BYTES; otherwise the connection is dropped
(docs/decisions/0077-slow-clients-and-floods.md). Other connections never wait on it: each is
its own protocol object on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from ftl.config import get_settings

REQUEST_READ_TIMEOUT_S = get_settings().web_request_read_timeout_s
MAX_HEAD_BYTES = 64 * 1024  # request line and headers together
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the read deadline and the head-size cap."""

    _read_deadline: asyncio.TimerHandle | None = None
    _head_bytes: int | None = 0  # None once the head of the current request is complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is not None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.transport.write(HEAD_TOO_LARGE)
                self.transport.close()
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_deadline()
        if self._head_bytes is None:
            self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_deadline()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # NOTE: the next request on this connection counts its head afresh.
        self._head_bytes = 0
        super().on_response_complete()

    def _start_deadline(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(REQUEST_READ_TIMEOUT_S, self._too_slow)

    def _stop_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        self.logger.info("Dropped a client that did not send its request within the deadline.")
        self.transport.close()


class WebWorker(UvicornWorker):  # type: ignore[misc]  # NOTE: uvicorn_worker is untyped
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": DeadlineHttpToolsProtocol,
    }
