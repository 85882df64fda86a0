"""Helpers for the WebSocket tests: instruments in hot state, ticks written the way the Lua scripts
write them, and a client that completes the handshake and then never reads."""

from __future__ import annotations

import asyncio
import socket
import uuid
from decimal import Decimal

from redis.asyncio import Redis
from websockets.client import ClientProtocol
from websockets.frames import Close
from websockets.http11 import Response
from websockets.uri import parse_uri

from ftl.market import instruments
from ftl.market.instruments import InstrumentState
from ftl.store import keys
from ftl.store.ticks import Tick, TickSource

ORIGIN = "https://ftl.example"
RECV_LIMIT_S = 5.0  # a guard against hanging, never a measurement


async def add_instrument(redis: Redis, idx: int) -> uuid.UUID:
    state = InstrumentState(
        id=uuid.uuid4(),
        idx=idx,
        sportmonks_player_id=1000 + idx,
        name=f"Player {idx}",
        team="Argentina",
        position="FWD",
        form_index=Decimal("10"),
        base_price_cents=23_000,
        live_base_price_cents=23_000,
        k_mod_micros=50_000,
        net_lots_centis=0,
        seq=0,
        is_active=True,
        frozen=False,
        degraded=False,
    )
    await instruments.load_missing(redis, [state])
    return state.id


def tick(
    instrument_id: uuid.UUID,
    idx: int,
    seq: int,
    price_cents: int = 23_000,
    *,
    source: TickSource = TickSource.TRADE,
    degraded: bool = False,
) -> Tick:
    return Tick(
        instrument_id, idx, seq, price_cents, 23_000, 0, source, 1_781_377_200_000, degraded
    )


async def append_ticks(redis: Redis, ticks: list[Tick], *, publish: bool = True) -> None:
    """Append to the tick log and publish, each tick in one MULTI, as the Lua scripts do."""
    for one in ticks:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.tick_log(one.instrument_id), {one.to_json(): one.seq})
            pipe.zremrangebyrank(keys.tick_log(one.instrument_id), 0, -keys.TICK_LOG_CAP - 1)
            if publish:
                pipe.publish(keys.price_channel(one.instrument_id), one.to_json())
            await pipe.execute()


class MuteClient:
    """Completes the WebSocket handshake over a raw socket, then reads nothing and answers no
    ping unless asked: the stuck or vanished client of the heartbeat and eviction rules."""

    def __init__(self, url: str, receive_buffer_bytes: int | None = None) -> None:
        self.url = url
        self.protocol = ClientProtocol(parse_uri(url))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        if receive_buffer_bytes is not None:
            # NOTE: set before connecting, so the TCP window never grows past it.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        uri = parse_uri(self.url)
        await loop.sock_connect(self.sock, (uri.host, uri.port))
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        async with asyncio.timeout(RECV_LIMIT_S):
            while True:
                self.protocol.receive_data(await loop.sock_recv(self.sock, 65_536))
                events = self.protocol.events_received()
                if events:
                    assert isinstance(events[0], Response)
                    assert events[0].status_code == 101, events[0].body
                    return

    async def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self._flush()

    async def send_raw(self, data: bytes) -> None:
        """Bytes straight to the socket, framed or not."""
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for data in self.protocol.data_to_send():
            if data:
                await loop.sock_sendall(self.sock, data)

    async def read_until_closed(self) -> Close | None:
        """Read everything the server sends until it drops the TCP connection; the close frame
        it sent, if any."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(RECV_LIMIT_S * 2):
            while True:
                try:
                    data = await loop.sock_recv(self.sock, 65_536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                self.protocol.receive_data(data)
        self.protocol.events_received()
        return self.protocol.close_rcvd

    def close(self) -> None:
        self.sock.close()
