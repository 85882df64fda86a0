"""WebSocket floods (issue #8): 10,000 pings from one client are all answered in order while a
calm client keeps its ticks; a message over the size cap closes only its sender with 1009. (A
flood of malformed messages is in test_ws.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import redis
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ftl import hotstore
from ftl.auth.tokens import Tokens
from ftl.config import Settings
from tests.e2e.test_ws import command, config, price_maps, recv, url
from tests.e2e.ws_helpers import add_instrument, append_ticks, tick
from web.ws.server import WsServer, running

pytestmark = pytest.mark.e2e

PINGS = 10_000


@pytest.fixture
async def hot(settings: Settings, redis_admin: redis.Redis) -> AsyncIterator[Redis]:
    redis_admin.flushdb()
    client = hotstore.connect(settings)
    yield client
    await client.aclose()


@pytest.fixture
def tokens(settings: Settings) -> Tokens:
    return Tokens(
        settings.jwt_private_key_b64, issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )


@pytest.fixture
async def server(hot: Redis, tokens: Tokens) -> AsyncIterator[WsServer]:
    async with running(config(), hot, tokens) as serving:
        yield serving


async def test_ten_thousand_pings_are_all_answered_and_a_calm_client_keeps_its_ticks(
    server: WsServer, tokens: Tokens, hot: Redis
) -> None:
    instrument = await add_instrument(hot, 3)
    async with connect(url(server, tokens)) as flooder, connect(url(server, tokens)) as calm:
        await command(calm, {"action": "subscribe", "idx": 3})

        async def flood() -> None:
            for _ in range(PINGS):
                await flooder.send('{"action":"ping"}')

        async def pongs() -> int:
            answered = 0
            while answered < PINGS:
                assert json.loads(await recv(flooder)) == {"type": "pong"}
                answered += 1
            return answered

        sending = asyncio.create_task(flood())
        counting = asyncio.create_task(pongs())
        await append_ticks(hot, [tick(instrument, 3, 1)])
        assert [m["q"] for m in await price_maps(calm)] == [1]
        assert await command(calm, {"action": "ping"}) == {"type": "pong"}
        await sending
        assert await counting == PINGS
        assert await command(flooder, {"action": "ping"}) == {"type": "pong"}, "still up"


@pytest.mark.parametrize("size", [4_097, 1024 * 1024])
async def test_a_message_over_the_size_cap_closes_only_its_sender_with_1009(
    server: WsServer, tokens: Tokens, hot: Redis, size: int
) -> None:
    instrument = await add_instrument(hot, 4)
    async with (
        connect(url(server, tokens), max_size=None) as big,
        connect(url(server, tokens)) as calm,
    ):
        await command(calm, {"action": "subscribe", "idx": 4})
        padding = "x" * (size - len('{"action":"ping","pad":""}'))
        await big.send(json.dumps({"action": "ping", "pad": padding}, separators=(",", ":")))
        with pytest.raises(ConnectionClosed) as closed:
            await recv(big)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await append_ticks(hot, [tick(instrument, 4, 1)])
        assert [m["q"] for m in await price_maps(calm)] == [1]
