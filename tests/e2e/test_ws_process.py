"""`ftl ws` as real processes: two replicas side by side on one Redis each serve their own clients
the same ticks (SPEC §7), answer /health and /metrics, and refuse an access token."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import IO

import httpx
import msgpack
import pytest
import redis
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ftl.core.config import Settings
from ftl.store import hotstore
from ftl.store.auth.tokens import Tokens, TokenType
from tests.e2e.conftest import FTL, START_TIMEOUT_S, free_port, run_ftl
from tests.e2e.ws_helpers import RECV_LIMIT_S, add_instrument, append_ticks, tick

pytestmark = pytest.mark.e2e

METRICS_TOKEN = "ws-scrape-token"


def start_ws(
    extra_env: dict[str, str] | None = None, stderr: int | IO[bytes] = subprocess.PIPE
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "WS_PORT": str(port), **(extra_env or {})}
    process = subprocess.Popen([FTL, "ws"], env=env, stderr=stderr)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, port
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"ftl ws did not start: {process.communicate()[1]!r}")
        time.sleep(0.1)


@pytest.fixture
def replicas(redis_admin: redis.Redis) -> Iterator[list[int]]:
    redis_admin.flushdb()
    started = [start_ws({"METRICS_TOKEN": METRICS_TOKEN}) for _ in range(2)]
    try:
        yield [port for _, port in started]
        for process, _ in started:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0, process.stderr.read()  # type: ignore[union-attr]
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stderr.close()  # type: ignore[union-attr]


@pytest.fixture
async def hot(settings: Settings) -> AsyncIterator[Redis]:
    client = hotstore.connect(settings)
    yield client
    await client.aclose()


async def test_two_replicas_each_serve_their_own_clients_the_same_tick(
    replicas: list[int], hot: Redis, settings: Settings
) -> None:
    tokens = Tokens(
        settings.jwt_private_key_b64, issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    user = str(uuid.uuid4())
    access, _ = tokens.issue(TokenType.ACCESS, user)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{replicas[0]}/ws/prices?token={access}"):
            pass
    assert refused.value.response.status_code == 401

    instrument = await add_instrument(hot, 11)
    targets = [
        f"ws://127.0.0.1:{port}/ws/prices?token={tokens.issue(TokenType.WS, user)[0]}"
        for port in replicas
    ]
    async with connect(targets[0]) as first, connect(targets[1]) as second:
        for client in (first, second):
            await client.send(json.dumps({"action": "subscribe", "idx": 11}))
            assert json.loads(await client.recv(decode=True))["type"] == "subscribed"
        await append_ticks(hot, [tick(instrument, 11, 1, 9_999)])
        frames = []
        for client in (first, second):
            async with asyncio.timeout(RECV_LIMIT_S):
                frames.append(await client.recv())
    assert frames[0] == frames[1]
    assert msgpack.unpackb(frames[0]) == {"i": 11, "p": 99.99, "s": 1, "q": 1}

    async with httpx.AsyncClient(timeout=5) as http:
        for port in replicas:
            # APPSEC: with METRICS_TOKEN set, a scrape without it learns nothing.
            for wrong in ({}, {"Authorization": "Bearer not-the-token"}):
                refused_scrape = await http.get(f"http://127.0.0.1:{port}/metrics", headers=wrong)
                assert refused_scrape.status_code == 401
                assert refused_scrape.json()["error"]["code"] == "unauthorized"
                assert "ftl_ws" not in refused_scrape.text
            scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
            metrics = (await http.get(f"http://127.0.0.1:{port}/metrics", headers=scraper)).text
            assert 'ftl_ws_frames_sent_total{kind="price"} 1.0' in metrics


def test_ftl_ws_without_a_token_key_stops_in_one_line() -> None:
    result = run_ftl("ws", env={"JWT_PRIVATE_KEY_B64": ""})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "JWT_PRIVATE_KEY_B64" in lines[0], result.stderr
