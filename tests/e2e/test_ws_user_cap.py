"""The per-user connection cap of SPEC §7 across replicas: one user holds at most
WS_MAX_CONNECTIONS_PER_USER connections on all `ws` replicas together, the next is refused 429
before the handshake, and a crashed replica's connections stop counting once their leases lapse."""

from __future__ import annotations

import asyncio
import signal
import uuid
from contextlib import AsyncExitStack

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from ftl.store import keys
from ftl.store.auth.tokens import Tokens, TokenType
from tests.e2e.test_ws import command, config, refusal
from tests.e2e.test_ws_process import start_ws
from tests.e2e.ws_helpers import RECV_LIMIT_S
from web.ws.server import WsServer, running

pytestmark = pytest.mark.e2e

CAP = 5


def target(port: int, tokens: Tokens, user: uuid.UUID) -> str:
    token, _ = tokens.issue(TokenType.WS, str(user))
    return f"ws://127.0.0.1:{port}/ws/prices?token={token}"


async def admitted_eventually(url: str) -> ClientConnection:
    """Connect with one token, retrying while refused 429 (a refusal leaves the token unspent)."""
    async with asyncio.timeout(RECV_LIMIT_S * 2):
        while True:
            try:
                return await connect(url)
            except InvalidStatus as refused:
                assert refused.response.status_code == 429, refused.response.body
                await asyncio.sleep(0.05)


async def test_the_cap_holds_across_two_replicas_and_a_closed_connection_frees_a_slot(
    hot: Redis, tokens: Tokens
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with (
        running(config(max_connections_per_user=CAP), hot, tokens) as one,
        running(config(max_connections_per_user=CAP), hot, tokens) as two,
        AsyncExitStack() as open_connections,
    ):
        held = [
            await open_connections.enter_async_context(connect(target(server.port, tokens, alice)))
            for server in (one, one, one, two, two)
        ]
        for server in (one, two):
            status, code = await refusal(target(server.port, tokens, alice))
            assert (status, code) == (429, "too_many_connections")
        assert await hot.zcard(keys.ws_connections(alice)) == CAP
        async with connect(target(two.port, tokens, bob)) as other_user:
            assert await command(other_user, {"action": "ping"}) == {"type": "pong"}

        await held[0].close()
        sixth = await admitted_eventually(target(two.port, tokens, alice))
        try:
            assert await command(sixth, {"action": "ping"}) == {"type": "pong"}
        finally:
            await sixth.close()


async def test_a_crashed_replicas_connections_stop_counting_once_their_leases_lapse(
    hot: Redis, tokens: Tokens
) -> None:
    user = uuid.uuid4()
    lease = {"WS_CONNECTION_LEASE_S": "1", "WS_MAX_CONNECTIONS_PER_USER": "2"}
    process, port = start_ws(lease)
    try:
        async with (
            running(config(max_connections_per_user=2, connection_lease_s=1.0), hot, tokens) as b,
            connect(target(port, tokens, user)),
            connect(target(port, tokens, user)),
        ):
            key = keys.ws_connections(user)
            # NOTE: the highest score is the lease that runs out last.
            first_expiry = float((await hot.zrevrange(key, 0, 0, withscores=True))[0][1])
            # the live replica renews its leases: wait until Redis time is past the first ones
            async with asyncio.timeout(RECV_LIMIT_S):
                while (await hot.time())[0] * 1000 <= first_expiry:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert await refusal(target(b.port, tokens, user)) == (429, "too_many_connections")

            process.send_signal(signal.SIGKILL)  # no goodbye: its entries are left behind
            assert process.wait(timeout=15) == -signal.SIGKILL
            survivor = await admitted_eventually(target(b.port, tokens, user))
            await survivor.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()  # type: ignore[union-attr]


async def test_a_closed_connection_leaves_no_entry_behind(hot: Redis, tokens: Tokens) -> None:
    user = uuid.uuid4()
    server: WsServer
    async with (
        running(config(), hot, tokens) as server,
        connect(target(server.port, tokens, user)) as client,
    ):
        await command(client, {"action": "ping"})
        assert await hot.zcard(keys.ws_connections(user)) == 1
    # NOTE: the server has stopped, so every handler's release has run.
    assert await hot.exists(keys.ws_connections(user)) == 0
