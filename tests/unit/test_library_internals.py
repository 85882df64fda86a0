"""Guards on the library internals FTL relies on (docs/decisions/0142). Each test fails on a
version of the library that breaks the reliance, before production does:

- web/worker.py subclasses uvicorn's httptools protocol (no public hook bounds how long a request
  may take to arrive) and swaps the transport and `on_response` of each request's cycle;
- web/ws/hub.py writes whole frames straight to a websockets connection's `transport`
  (tests/integration/test_ws_transport.py drives it over a real socket);
- scripts/procs.py replaces honcho's process manager and its kill wait.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, cast

import honcho.compat
import honcho.manager
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState
from uvicorn_worker import UvicornWorker

from web.worker import DeadlineHttpToolsProtocol, HeadHoldingTransport, WebWorker

OVERRIDDEN = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_headers_complete",
    "on_message_complete",
    "on_response_complete",
)


def test_uvicorn_still_has_what_the_deadline_protocol_overrides_and_reads() -> None:
    for name in OVERRIDDEN:
        assert name in vars(HttpToolsProtocol), name  # overridden, so it must exist to extend
    assert list(inspect.signature(HttpToolsProtocol.data_received).parameters) == ["self", "data"]
    assert list(inspect.signature(HttpToolsProtocol.connection_made).parameters)[:2] == [
        "self",
        "transport",
    ]
    cycle = inspect.signature(RequestResponseCycle.__init__).parameters
    assert {"transport", "on_response"} <= set(cycle)
    assert {
        **UvicornWorker.CONFIG_KWARGS,
        "http": DeadlineHttpToolsProtocol,
    } == WebWorker.CONFIG_KWARGS


class Socket:
    """The connection's transport as uvicorn sees it: what it writes, in which calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: object) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


ANSWERED = asyncio.Event()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})
    ANSWERED.set()


async def test_a_request_through_uvicorn_uses_the_swapped_cycle_and_leaves_in_one_write() -> None:
    config = Config(app=app, http=DeadlineHttpToolsProtocol, lifespan="off", log_config=None)
    config.load()
    protocol = DeadlineHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    socket = Socket()
    protocol.connection_made(cast(asyncio.Transport, socket))
    assert protocol._read_deadline is not None  # the deadline runs from the first byte on
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: ftl\r\n\r\n")

    cycle = protocol.cycle
    assert isinstance(cycle.transport, HeadHoldingTransport)
    assert cycle.on_response == cycle.transport.complete
    await ANSWERED.wait()
    assert cycle.response_complete
    assert len(socket.writes) == 1  # the head held until the body: one write (decision 0024)
    assert socket.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert socket.writes[0].endswith(b"\r\n\r\nok")
    assert protocol._read_deadline is None and protocol._head_bytes == 0
    protocol.connection_lost(None)


def test_honcho_still_has_the_manager_and_kill_wait_procs_replaces() -> None:
    assert isinstance(honcho.manager.KILL_WAIT, int | float)
    assert honcho.manager.ProcessManager is honcho.compat.ProcessManager or (
        issubclass(honcho.manager.ProcessManager, honcho.compat.ProcessManager)
    )
    assert list(inspect.signature(honcho.compat.ProcessManager.terminate).parameters) == [
        "self",
        "pid",
    ]
    # honcho's Manager makes its process manager by that module-level name, at construction.
    assert "ProcessManager()" in inspect.getsource(honcho.manager.Manager.__init__)
