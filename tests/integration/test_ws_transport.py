"""The websockets internals web/ws/hub.py relies on (docs/decisions/0142), over a real socket: a
connection's `transport` (not part of websockets' documented API) takes whole frames framed by
web/ws/frames.py, between the library's own frames, and reports its write buffer."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.protocol import State

from web.ws import frames


async def test_whole_frames_written_to_the_transport_reach_the_client_between_library_frames() -> (
    None
):
    sizes: list[int] = []

    async def handler(connection: ServerConnection) -> None:
        transport = connection.transport
        assert isinstance(transport, asyncio.Transport)
        assert connection.state is State.OPEN
        sizes.append(transport.get_write_buffer_size())
        await connection.send("first")  # the library's framing
        transport.write(frames.wire_frame(b'{"a":1}', frames.TEXT))  # ours, as the hub does
        transport.write(frames.wire_frame(b"\x00" * 70_000))  # a 64-bit length
        await connection.send("last")
        await connection.wait_closed()

    async with (
        serve(handler, "127.0.0.1", 0, compression=None) as server,
        connect(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", compression=None) as client,
    ):
        received = [await client.recv() for _ in range(4)]
        pong = await client.ping()  # the library's control frames still pass after ours
        await pong

    assert received == ["first", '{"a":1}', b"\x00" * 70_000, "last"]
    assert sizes == [0]
