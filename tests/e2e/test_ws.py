"""The WebSocket fan-out (SPEC §7) on loopback: a real server on a free port, real clients, real
Redis. The server runs in the test's process so each test can give it short heartbeats or small
buffers (WsConfig); tests/e2e/test_ws_process.py runs the `ftl ws` process itself."""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ftl.store import keys
from ftl.store.auth.tokens import Tokens, TokenType, generate_private_key_b64
from ftl.store.ticks import TickSource
from tests.e2e.ws_helpers import (
    ORIGIN,
    RECV_LIMIT_S,
    MuteClient,
    add_instrument,
    append_ticks,
    tick,
)
from web.ws.config import WsConfig
from web.ws.server import WsServer, running

pytestmark = pytest.mark.e2e


def config(**changes: Any) -> WsConfig:
    return WsConfig(port=0, cors_origins=(ORIGIN,), **changes)


@pytest.fixture
async def server(hot: Redis, tokens: Tokens) -> AsyncIterator[WsServer]:
    async with running(config(), hot, tokens) as serving:
        yield serving


def url(server: WsServer, tokens: Tokens, user: uuid.UUID | None = None) -> str:
    token, _ = tokens.issue(TokenType.WS, str(user or uuid.uuid4()))
    return f"ws://127.0.0.1:{server.port}/ws/prices?token={token}"


async def recv(client: ClientConnection) -> str | bytes:
    async with asyncio.timeout(RECV_LIMIT_S):
        return await client.recv()


async def recv_json(client: ClientConnection) -> dict[str, Any]:
    message = await recv(client)
    assert isinstance(message, str), message
    body: dict[str, Any] = json.loads(message)
    return body


async def command(client: ClientConnection, body: dict[str, Any]) -> dict[str, Any]:
    await client.send(json.dumps(body))
    return await recv_json(client)


async def price_maps(client: ClientConnection) -> list[dict[str, Any]]:
    """The ticks of the next price frame, whether it carries one map or an array of them."""
    message = await recv(client)
    assert isinstance(message, bytes), message
    decoded = msgpack.unpackb(message)
    return decoded if isinstance(decoded, list) else [decoded]


def map_bytes(idx: int, price: float, source: int, seq: int, degraded: bool = False) -> bytes:
    """A tick's map in MessagePack, spelled out byte by byte (not by the msgpack library)."""
    pairs = b"\xa1i" + bytes((idx,)) + b"\xa1p\xcb" + struct.pack(">d", price)
    pairs += b"\xa1s" + bytes((source,)) + b"\xa1q" + bytes((seq,))
    if degraded:
        return b"\x85" + pairs + b"\xa1d\x01"
    return b"\x84" + pairs


# -- the handshake


async def refusal(target: str, origin: str | None = ORIGIN) -> tuple[int, str]:
    """(status, error code) of an upgrade the server refuses."""
    headers = {"Origin": origin} if origin else {}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(target, additional_headers=headers):
            pass
    response = refused.value.response
    error = json.loads(response.body or b"{}")["error"]
    assert error["message"]
    return response.status_code, error["code"]


async def test_every_bad_token_is_401_before_the_handshake(
    server: WsServer, tokens: Tokens
) -> None:
    base = f"ws://127.0.0.1:{server.port}/ws/prices"
    user = str(uuid.uuid4())
    expired, _ = tokens.issue(TokenType.WS, user, ttl_s=-120)
    access, _ = tokens.issue(TokenType.ACCESS, user)
    refresh, _ = tokens.issue(TokenType.REFRESH, user)
    stranger = Tokens(generate_private_key_b64(), issuer=tokens.issuer, audience=tokens.audience)
    forged, _ = stranger.issue(TokenType.WS, user)
    cases = {
        "missing": (base, "unauthorized"),
        "empty": (f"{base}?token=", "unauthorized"),
        "garbage": (f"{base}?token=not.a.jwt", "unauthorized"),
        "expired": (f"{base}?token={expired}", "token_expired"),
        "access token": (f"{base}?token={access}", "unauthorized"),
        "refresh token": (f"{base}?token={refresh}", "unauthorized"),
        "another key": (f"{base}?token={forged}", "unauthorized"),
    }
    for name, (target, code) in cases.items():
        assert await refusal(target) == (401, code), name
    assert server.hub.clients == set()


async def test_a_ws_token_opens_one_connection_only(server: WsServer, tokens: Tokens) -> None:
    target = url(server, tokens)
    async with connect(target, additional_headers={"Origin": ORIGIN}):
        assert await refusal(target) == (401, "unauthorized")


async def test_a_foreign_origin_is_403_and_a_listed_or_absent_one_connects(
    server: WsServer, tokens: Tokens
) -> None:
    assert await refusal(url(server, tokens), "https://evil.example") == (403, "forbidden")
    assert await refusal(url(server, tokens), "null") == (403, "forbidden")
    for origin in (ORIGIN, None):
        headers = {"Origin": origin} if origin else {}
        async with connect(url(server, tokens), additional_headers=headers) as client:
            assert await command(client, {"action": "ping"}) == {"type": "pong"}


async def test_a_full_process_is_503_until_a_connection_leaves(hot: Redis, tokens: Tokens) -> None:
    async with (
        running(config(max_connections=2), hot, tokens) as full,
        connect(url(full, tokens)),
        connect(url(full, tokens)) as second,
    ):
        assert await refusal(url(full, tokens)) == (503, "unavailable")
        await second.close()
        async with connect(url(full, tokens)) as third:
            assert await command(third, {"action": "ping"}) == {"type": "pong"}


async def test_other_paths_are_404_and_health_and_metrics_answer(
    server: WsServer, tokens: Tokens
) -> None:
    token, _ = tokens.issue(TokenType.WS, str(uuid.uuid4()))
    assert await refusal(f"ws://127.0.0.1:{server.port}/ws/other?token={token}") == (
        404,
        "not_found",
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        health = await http.get("/health")
        assert (health.status_code, health.json()["status"]) == (200, "ok")
        async with connect(url(server, tokens)):
            metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "ftl_ws_connections 1.0",
        "ftl_ws_subscriptions",
        "ftl_ws_frames_sent_total",
        "ftl_ws_bytes_sent_total",
        "ftl_ws_evictions_total",
        "ftl_ws_fan_out_cycle_seconds_bucket",
        "ftl_ws_tick_age_seconds_bucket",
        'ftl_ws_handshake_rejections_total{code="not_found"} 1.0',
    ):
        assert name in metrics.text, name


# -- price frames


async def test_a_price_frame_is_the_spec_msgpack_map_byte_for_byte(
    server: WsServer, tokens: Tokens, hot: Redis
) -> None:
    instrument = await add_instrument(hot, 42)
    async with connect(url(server, tokens)) as client:
        ack = await command(client, {"action": "subscribe", "idx": 42})
        assert ack == {"type": "subscribed", "idx": 42, "instrumentId": str(instrument)}
        await append_ticks(hot, [tick(instrument, 42, 7, 12_345, source=TickSource.TRADE)])
        assert await recv(client) == map_bytes(42, 123.45, 1, 7)
        degraded = tick(instrument, 42, 8, 12_300, source=TickSource.LIVE, degraded=True)
        await append_ticks(hot, [degraded])
        assert await recv(client) == map_bytes(42, 123.0, 0, 8, degraded=True)


async def test_ticks_due_in_one_cycle_come_as_one_array_oldest_first(
    server: WsServer, tokens: Tokens, hot: Redis
) -> None:
    first, second = await add_instrument(hot, 1), await add_instrument(hot, 2)
    async with connect(url(server, tokens)) as client:
        await command(client, {"action": "subscribe", "idx": 1})
        await command(client, {"action": "subscribe", "instrumentId": str(second)})
        await append_ticks(hot, [tick(first, 1, 5, 5_000), tick(second, 2, 9, 7_525)])
        expected = b"\x92" + map_bytes(1, 50.0, 1, 5) + map_bytes(2, 75.25, 1, 9)
        assert await recv(client) == expected


async def test_connections_due_the_same_ticks_share_a_frame_and_others_get_their_own(
    server: WsServer, tokens: Tokens, hot: Redis
) -> None:
    first, second = await add_instrument(hot, 1), await add_instrument(hot, 2)
    async with (
        connect(url(server, tokens)) as one,
        connect(url(server, tokens)) as two,
        connect(url(server, tokens)) as only_first,
        connect(url(server, tokens)) as only_second,
    ):
        for client, idxs in ((one, [1, 2]), (two, [1, 2]), (only_first, [1]), (only_second, [2])):
            for idx in idxs:
                await command(client, {"action": "subscribe", "idx": idx})
        await append_ticks(hot, [tick(first, 1, 3, 5_000), tick(second, 2, 4, 7_525)])
        both = b"\x92" + map_bytes(1, 50.0, 1, 3) + map_bytes(2, 75.25, 1, 4)
        assert await recv(one) == both
        assert await recv(two) == both
        assert await recv(only_first) == map_bytes(1, 50.0, 1, 3)
        assert await recv(only_second) == map_bytes(2, 75.25, 1, 4)


async def test_only_subscribers_get_an_instrument_and_unsubscribe_stops_it(
    server: WsServer, tokens: Tokens, hot: Redis
) -> None:
    first, second = await add_instrument(hot, 1), await add_instrument(hot, 2)
    async with connect(url(server, tokens)) as one, connect(url(server, tokens)) as two:
        await command(one, {"action": "subscribe", "idx": 1})
        await command(two, {"action": "subscribe", "idx": 2})
        await append_ticks(hot, [tick(first, 1, 1)])
        await append_ticks(hot, [tick(second, 2, 1)])
        assert [m["i"] for m in await price_maps(one)] == [1]
        assert [m["i"] for m in await price_maps(two)] == [2], "idx 1 must never reach two"

        ack = await command(one, {"action": "unsubscribe", "instrumentId": str(first)})
        assert ack == {"type": "unsubscribed", "idx": 1, "instrumentId": str(first)}
        await command(one, {"action": "subscribe", "idx": 2})
        await append_ticks(hot, [tick(first, 1, 2)])
        await append_ticks(hot, [tick(second, 2, 2)])
        assert [(m["i"], m["q"]) for m in await price_maps(one)] == [(2, 2)]


# -- portfolio frames


async def test_a_user_never_receives_another_users_portfolio_frame(
    server: WsServer, tokens: Tokens, hot: Redis
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    instrument = await add_instrument(hot, 3)
    frame_for = {
        user: json.dumps(
            {"type": "portfolio", "event": "position_opened", "wallet": {"u": str(user)}}
        )
        for user in (alice, bob)
    }
    async with (
        connect(url(server, tokens, alice)) as alice_watching,
        connect(url(server, tokens, alice)) as alice_quiet,
        connect(url(server, tokens, bob)) as bob_watching,
    ):
        for client in (alice_watching, bob_watching):
            ack = await command(client, {"action": "subscribe_portfolio"})
            assert ack == {"type": "subscribed", "portfolio": True}
        refused = await command(alice_quiet, {"action": "subscribe_portfolio", "userId": str(bob)})
        assert refused["code"] == "unknown_field"
        for client in (alice_watching, alice_quiet, bob_watching):
            await command(client, {"action": "subscribe", "idx": 3})

        await hot.publish(keys.portfolio_channel(bob), frame_for[bob])
        await hot.publish(keys.portfolio_channel(alice), frame_for[alice])
        await append_ticks(hot, [tick(instrument, 3, 1)])  # the barrier after both frames

        assert await recv(alice_watching) == frame_for[alice], "verbatim, and only Alice's"
        assert isinstance(await recv(alice_watching), bytes)
        assert await recv(bob_watching) == frame_for[bob]
        assert isinstance(await recv(bob_watching), bytes)
        assert isinstance(await recv(alice_quiet), bytes), "no portfolio without subscribing"


# -- replay


async def test_last_sequence_replays_the_log_in_order_then_goes_live(
    server: WsServer, tokens: Tokens, hot: Redis
) -> None:
    instrument = await add_instrument(hot, 4)
    await append_ticks(hot, [tick(instrument, 4, seq) for seq in range(1, 11)], publish=False)
    async with connect(url(server, tokens)) as client:
        await command(client, {"action": "subscribe", "idx": 4, "lastSequence": 3})
        assert [m["q"] for m in await price_maps(client)] == list(range(4, 11))
        await append_ticks(hot, [tick(instrument, 4, 11)])
        assert [m["q"] for m in await price_maps(client)] == [11]


async def test_replay_across_the_seam_has_no_gap_and_no_duplicate(
    server: WsServer, tokens: Tokens, hot: Redis
) -> None:
    instrument = await add_instrument(hot, 5)
    await append_ticks(hot, [tick(instrument, 5, seq) for seq in range(1, 51)], publish=False)
    last = 400

    async def trade_flow() -> None:
        for seq in range(51, last + 1):
            await append_ticks(hot, [tick(instrument, 5, seq)])
            if seq % 10 == 0:
                await asyncio.sleep(0.005)

    async def late_subscriber(start_after: float, last_sequence: int) -> list[int]:
        await asyncio.sleep(start_after)
        seqs: list[int] = []
        async with connect(url(server, tokens)) as client:
            await command(client, {"action": "subscribe", "idx": 5, "lastSequence": last_sequence})
            while not seqs or seqs[-1] < last:
                seqs += [m["q"] for m in await price_maps(client)]
        return seqs

    flow = asyncio.create_task(trade_flow())
    subscribers = [late_subscriber(0.02 * n, 10 + 5 * n) for n in range(8)]
    results = await asyncio.gather(*subscribers)
    await flow
    for n, seqs in enumerate(results):
        assert seqs == list(range(10 + 5 * n + 1, last + 1)), f"subscriber {n}"


# -- heartbeats, slow consumers, bad messages


async def test_a_client_that_never_answers_pings_is_dropped_after_the_timeout(
    hot: Redis, tokens: Tokens
) -> None:
    quick = config(ping_interval_s=0.2, ping_timeout_s=0.2, close_timeout_s=0.2)
    async with running(quick, hot, tokens) as server:
        silent = MuteClient(url(server, tokens))
        try:
            await silent.open()
            async with connect(url(server, tokens)) as answering:
                close = await silent.read_until_closed()
                assert close is not None and close.code == 1011, close
                assert close.reason == "keepalive ping timeout"
                assert await command(answering, {"action": "ping"}) == {"type": "pong"}
        finally:
            silent.close()


async def test_a_client_that_stops_reading_is_evicted_and_a_healthy_one_keeps_receiving(
    hot: Redis, tokens: Tokens
) -> None:
    small = config(write_limit_bytes=4_096, send_buffer_bytes=4_096)
    async with running(small, hot, tokens) as server:
        instrument = await add_instrument(hot, 6)
        stuck = MuteClient(url(server, tokens), receive_buffer_bytes=4_096)
        try:
            await stuck.open()
            await stuck.send_text(json.dumps({"action": "subscribe", "idx": 6}))
            async with connect(url(server, tokens)) as healthy:
                await command(healthy, {"action": "subscribe", "idx": 6})
                received: list[int] = []
                seq = 0
                for _ in range(40):
                    batch = [tick(instrument, 6, seq + n) for n in range(1, 301)]
                    seq += len(batch)
                    await append_ticks(hot, batch)
                    while received[-1:] != [seq]:
                        received += [m["q"] for m in await price_maps(healthy)]
                    if len(server.hub.clients) == 1:
                        break
                assert len(server.hub.clients) == 1, "the stuck client was never evicted"
                registry = server.metrics.registry
                evictions = registry.get_sample_value(
                    "ftl_ws_evictions_total", {"reason": "slow_consumer"}
                )
                assert evictions == 1
                await append_ticks(hot, [tick(instrument, 6, seq + 1)])
                received += [m["q"] for m in await price_maps(healthy)]
                assert received == list(range(1, seq + 2)), "the healthy client lost nothing"
        finally:
            stuck.close()


async def test_a_flood_of_malformed_messages_closes_only_that_connection(
    server: WsServer, tokens: Tokens, hot: Redis
) -> None:
    instrument = await add_instrument(hot, 7)
    bad = [
        "not json",
        "[1, 2]",
        json.dumps({"action": "dance"}),
        json.dumps({"action": "subscribe"}),
        json.dumps({"action": "subscribe", "idx": 0}),
        json.dumps({"action": "subscribe", "idx": True}),
        json.dumps({"action": "subscribe", "idx": 7, "instrumentId": str(instrument)}),
        json.dumps({"action": "subscribe", "instrumentId": "nope"}),
        json.dumps({"action": "subscribe", "idx": 7, "lastSequence": -1}),
        json.dumps({"action": "subscribe", "idx": 999}),
        json.dumps({"action": "ping", "extra": 1}),
    ]
    expected_codes = [
        "invalid_json",
        "invalid_json",
        "unknown_action",
        "validation_error",
        "validation_error",
        "validation_error",
        "validation_error",
        "validation_error",
        "validation_error",
        "unknown_instrument",
        "unknown_field",
    ]
    async with connect(url(server, tokens)) as flooder, connect(url(server, tokens)) as calm:
        await command(calm, {"action": "subscribe", "idx": 7})
        codes = []
        for message in bad:
            await flooder.send(message)
            codes.append((await recv_json(flooder))["code"])
        assert codes == expected_codes
        await flooder.send(b"\x00binary")
        assert (await recv_json(flooder))["code"] == "invalid_message"
        assert await command(flooder, {"action": "ping"}) == {"type": "pong"}, "still up"
        for _ in range(20 - len(bad) - 1):
            await flooder.send("{")
            assert (await recv_json(flooder))["code"] == "invalid_json"
        await flooder.send("{")  # the 21st
        with pytest.raises(ConnectionClosed) as closed:
            await recv(flooder)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

        await append_ticks(hot, [tick(instrument, 7, 1)])
        assert [m["q"] for m in await price_maps(calm)] == [1]
        assert await command(calm, {"action": "ping"}) == {"type": "pong"}


# -- presence


async def test_presence_announces_the_first_connect_and_records_the_last_disconnect(
    server: WsServer, tokens: Tokens, hot: Redis
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    reconnects = hot.pubsub(ignore_subscribe_messages=True)
    await reconnects.subscribe(keys.USER_RECONNECT_CHANNEL)

    async def next_reconnect() -> str:
        async with asyncio.timeout(RECV_LIMIT_S):
            while True:
                message = await reconnects.get_message(timeout=RECV_LIMIT_S)
                if message is not None:
                    return str(message["data"])

    try:
        first = await connect(url(server, tokens, alice))
        assert await next_reconnect() == str(alice)
        second = await connect(url(server, tokens, alice))
        async with connect(url(server, tokens, bob)):
            assert await next_reconnect() == str(bob), "Alice's second connect is not announced"
        await first.close()
        await command(second, {"action": "ping"})
        assert await hot.get(keys.last_seen(alice)) is None, "Alice is still connected"
        await second.close()
        async with asyncio.timeout(RECV_LIMIT_S):
            # NOTE: the server records it after the close handshake; nothing to wait on but Redis.
            while (seen := await hot.get(keys.last_seen(alice))) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert int(seen) > 1_700_000_000_000
        assert 0 < await hot.ttl(keys.last_seen(alice)) <= 86_400
    finally:
        await reconnects.aclose()
