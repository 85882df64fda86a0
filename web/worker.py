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
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from ftl.core.config import get_settings

REQUEST_READ_TIMEOUT_S = get_settings().web_request_read_timeout_s
MAX_HEAD_BYTES = 64 * 1024  # request line and headers together
CONTINUE = b"HTTP/1.1 100 "
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
        cycle = self.cycle
        if cycle is not None:
            holding = HeadHoldingTransport(self.transport, cycle.on_response)
            cycle.transport = holding  # type: ignore[assignment]  # NOTE: alike, not a subclass
            cycle.on_response = holding.complete

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


class HeadHoldingTransport:
    """The connection's transport as one response's cycle sees it: the response head is held
    until the body's first write, so a response whose body follows at once (every response here)
    leaves in one system call instead of two (decision 0024).

    Only the first write (the head) is held; `100 Continue` never is (the client waits for it).
    The head goes out by itself when the cycle closes the connection or completes without a body
    write (a HEAD request); an abort drops it with the connection.
    """

    __slots__ = ("_done", "_held", "_passing", "_transport")

    def __init__(self, transport: asyncio.Transport, done: Callable[[], None]) -> None:
        self._transport = transport
        self._done = done
        self._held: bytes | None = None
        self._passing = False

    def write(self, data: bytes) -> None:
        if self._passing:
            self._transport.write(data)
        elif self._held is not None:
            self._passing = True
            self._transport.write(self._held + data)
            self._held = None
        elif data.startswith(CONTINUE):
            self._transport.write(data)
        else:
            self._held = data

    def release(self) -> None:
        self._passing = True
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None

    def complete(self) -> None:
        """The cycle's `on_response`: the response is complete."""
        self.release()
        self._done()

    def close(self) -> None:
        self.release()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class WebWorker(UvicornWorker):  # type: ignore[misc]  # NOTE: uvicorn_worker is untyped
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": DeadlineHttpToolsProtocol,
    }
