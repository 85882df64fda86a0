"""WebSocket floods and hostile messages (issues #8, #17; SPEC §7 limits): a ping flood is served
to its burst, refused, then closed with 1008 while a calm client keeps its ticks; a replay costs
its size in commands; a command over 4 KiB or nested deeper than 8 gets an error frame and the
connection stays up; a message over the frame cap closes only its sender with 1009. (A flood of
malformed messages is in test_ws.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ftl.store.auth.tokens import Tokens
from tests.e2e.test_ws import command, config, price_maps, recv, recv_json, url
from tests.e2e.ws_helpers import add_instrument, append_ticks, tick
from web.ws.server import WsServer, running

pytestmark = pytest.mark.e2e

PINGS = 10_000


@pytest.fixture
async def server(hot: Redis, tokens: Tokens) -> AsyncIterator[WsServer]:
    async with running(config(), hot, tokens) as serving:
        yield serving


async def test_a_ping_flood_is_answered_to_its_burst_then_refused_then_closed_1008(
    server: WsServer, tokens: Tokens, hot: Redis
) -> None:
    instrument = await add_instrument(hot, 3)
    burst = int(server.config.command_burst)
    async with connect(url(server, tokens)) as flooder, connect(url(server, tokens)) as calm:
        await command(calm, {"action": "subscribe", "idx": 3})

        async def flood() -> None:
            with contextlib.suppress(ConnectionClosed):
                for _ in range(PINGS):
                    await flooder.send('{"action":"ping"}')

        async def replies() -> list[dict[str, Any]]:
            answers = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    answers.append(json.loads(await recv(flooder)))
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert closed.value.rcvd.reason == "too many commands over the rate limit"
            return answers

        sending = asyncio.create_task(flood())
        answering = asyncio.create_task(replies())
        await append_ticks(hot, [tick(instrument, 3, 1)])
        assert [m["q"] for m in await price_maps(calm)] == [1]
        assert await command(calm, {"action": "ping"}) == {"type": "pong"}
        await sending
        answers = await answering
        assert answers[:burst] == [{"type": "pong"}] * burst, "the burst is served"
        refused = [a for a in answers if a["type"] == "error"]
        assert len(refused) >= server.config.refusal_burst
        assert {a["code"] for a in refused} == {"rate_limited"}
        assert all(a["details"]["retryAfter"] >= 1 for a in refused)
        assert len(answers) < PINGS, "most of the flood was never answered"
        evictions = server.metrics.registry.get_sample_value(
            "ftl_ws_evictions_total", {"reason": "rate_limited"}
        )
        assert evictions == 1
        await append_ticks(hot, [tick(instrument, 3, 2)])
        assert [m["q"] for m in await price_maps(calm)] == [2], "the calm client never noticed"


async def test_a_refused_client_that_waits_as_told_is_served_again(
    hot: Redis, tokens: Tokens
) -> None:
    quick = config(command_burst=3.0, commands_per_s=5.0)
    async with running(quick, hot, tokens) as server, connect(url(server, tokens)) as client:
        for _ in range(10):
            await client.send('{"action":"ping"}')
        answers = [await recv_json(client) for _ in range(10)]
        assert answers[:3] == [{"type": "pong"}] * 3
        refused = [a for a in answers if a["type"] == "error"]
        assert refused and {a["code"] for a in refused} == {"rate_limited"}
        # a well-behaved client waits the retryAfter it was given (a client's rule, not a
        # measurement): by then the bucket holds whole tokens again
        await asyncio.sleep(refused[-1]["details"]["retryAfter"])
        assert await command(client, {"action": "ping"}) == {"type": "pong"}


async def test_a_replay_costs_a_command_per_hundred_ticks(hot: Redis, tokens: Tokens) -> None:
    # NOTE: a bucket that refills once in 1,000 s: every token spent here stays spent.
    slow = config(command_burst=12.0, commands_per_s=0.001)
    instrument = await add_instrument(hot, 5)
    await append_ticks(hot, [tick(instrument, 5, seq) for seq in range(1, 1_001)], publish=False)
    async with (
        running(slow, hot, tokens) as server,
        connect(url(server, tokens)) as small,
        connect(url(server, tokens)) as big,
    ):
        # 100 ticks: one command, then 11 pings are within the burst of 12 and the 12th is not
        await command(small, {"action": "subscribe", "idx": 5, "lastSequence": 900})
        assert len(await price_maps(small)) == 100
        for _ in range(11):
            assert await command(small, {"action": "ping"}) == {"type": "pong"}
        assert (await command(small, {"action": "ping"}))["code"] == "rate_limited"
        # 1,000 ticks: ten commands, so two pings are left of the burst of 12
        await command(big, {"action": "subscribe", "idx": 5, "lastSequence": 0})
        replayed = 0
        while replayed < 1_000:
            replayed += len(await price_maps(big))
        for _ in range(2):
            assert await command(big, {"action": "ping"}) == {"type": "pong"}
        assert (await command(big, {"action": "ping"}))["code"] == "rate_limited"


async def test_a_command_over_4_kib_gets_an_error_frame_and_the_connection_stays_up(
    server: WsServer, tokens: Tokens
) -> None:
    async with connect(url(server, tokens)) as client:
        padding = "x" * (4_097 - len('{"action":"ping","pad":""}'))
        refused = await command(client, {"action": "ping", "pad": padding})
        assert (refused["type"], refused["code"]) == ("error", "message_too_large")
        assert refused["details"] == {"maxBytes": 4_096}
        wide = "é" * 2_100  # 2,100 characters, 4,200 bytes
        assert (await command(client, {"action": wide}))["code"] == "message_too_large"
        assert await command(client, {"action": "ping"}) == {"type": "pong"}


@pytest.mark.parametrize("size", [16 * 1024 + 1, 1024 * 1024])
async def test_a_message_over_the_frame_cap_closes_only_its_sender_with_1009(
    server: WsServer, tokens: Tokens, hot: Redis, size: int
) -> None:
    assert server.config.max_frame_bytes == 16 * 1024
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


async def test_deep_nesting_gets_an_error_frame_and_never_a_1011(
    server: WsServer, tokens: Tokens
) -> None:
    async with connect(url(server, tokens)) as client:
        # the reproduction of issue 17: RecursionError, close 1011, a stack trace in the log
        await client.send("[" * 3_000)
        refused = await recv_json(client)
        assert (refused["type"], refused["code"]) == ("error", "too_deeply_nested")
        assert refused["details"] == {"maxDepth": 8}
        nine = '{"action":"ping","x":' + "[" * 8 + "]" * 8 + "}"
        eight = '{"action":"ping","x":' + "[" * 7 + "]" * 7 + "}"
        await client.send(nine)
        assert (await recv_json(client))["code"] == "too_deeply_nested"
        await client.send(eight)
        assert (await recv_json(client))["code"] == "unknown_field", "parsed: 8 levels are fine"
        await client.send('{"action":"' + "[" * 3_000 + '"}')
        assert (await recv_json(client))["code"] == "unknown_action", "brackets in a string"
        assert await command(client, {"action": "ping"}) == {"type": "pong"}
