"""A WebSocket fuzzer against the real `ftl ws` process (issue 17, SPEC §7): hypothesis-generated
frames, text and binary (deep nesting, huge numbers, invalid UTF-8, odd actions and ids, oversized
messages), then raw bytes that are no WebSocket frame at all. The process never closes with 1011,
never logs a traceback, and still serves a healthy client afterwards.

Each example opens its own connection for a user of its own, so the limits (command bucket, per
user cap) start fresh and an example never depends on the one before it."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ftl.core.config import Settings
from ftl.store import hotstore
from ftl.store.auth.tokens import Tokens, TokenType
from tests.e2e.test_ws_process import start_ws
from tests.e2e.ws_helpers import RECV_LIMIT_S, MuteClient, add_instrument, append_ticks, tick

pytestmark = pytest.mark.e2e

IDXS = (7, 8)  # instruments in hot state, with a tick log to replay
LOGGED_TICKS = 150
# 1000 normal, 1002 protocol error, 1007 invalid UTF-8, 1008 policy (abuse), 1009 too big
ALLOWED_CLOSE_CODES = {1000, 1002, 1007, 1008, 1009}
EXAMPLES = 300  # per fuzzer; both together take a few seconds

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class FuzzedWs:
    port: int
    log: Path
    process: subprocess.Popen[bytes]


@pytest.fixture
def fuzzed_ws(settings: Settings, redis_admin: redis.Redis, tmp_path: Path) -> Iterator[FuzzedWs]:
    """`ftl ws` with hot state for two instruments; its log goes to a file the test reads."""
    redis_admin.flushdb()

    async def seed() -> None:
        hot = hotstore.connect(settings)
        try:
            for idx in IDXS:
                instrument = await add_instrument(hot, idx)
                ticks = [tick(instrument, idx, seq) for seq in range(1, LOGGED_TICKS + 1)]
                await append_ticks(hot, ticks, publish=False)
        finally:
            await hot.aclose()

    asyncio.run(seed())
    log = tmp_path / "ws.log"
    with log.open("wb") as sink:
        process, port = start_ws({"LOG_LEVEL": "INFO"}, stderr=sink)
    try:
        yield FuzzedWs(port, log, process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def url(ws: FuzzedWs, tokens: Tokens) -> str:
    token, _ = tokens.issue(TokenType.WS, str(uuid.uuid4()))
    return f"ws://127.0.0.1:{ws.port}/ws/prices?token={token}"


# -- what a hostile client sends

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
actions = st.sampled_from(["subscribe", "unsubscribe", "subscribe_portfolio", "ping"]) | json_values
ids = (
    st.sampled_from(IDXS)
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.uuids().map(str)
    | json_values
)
commands = st.fixed_dictionaries(
    {"action": actions},
    optional={
        "idx": ids,
        "instrumentId": ids,
        "lastSequence": st.integers(min_value=-5, max_value=LOGGED_TICKS + 5)
        | st.integers(min_value=-(10**25), max_value=10**25)
        | ids,
        "userId": st.uuids().map(str),
    },
)


def nested(depth: int, opener: str, closer: str, closed: bool) -> str:
    return opener * depth + (closer * depth if closed else "")


deep = st.builds(
    nested,
    st.integers(min_value=0, max_value=4_000),
    st.sampled_from(["[", '{"a":']),
    st.sampled_from(["]", "}"]),
    st.booleans(),
)
huge_numbers = st.builds(
    lambda digits, where: '{"action":"subscribe","' + where + '":' + "9" * digits + "}",
    st.integers(min_value=1, max_value=4_090),
    st.sampled_from(["idx", "lastSequence", "x"]),
)
texts = (
    commands.map(lambda body: json.dumps(body, allow_nan=True))
    | deep
    | huge_numbers
    | st.text(max_size=200)
    | st.text(min_size=4_000, max_size=4_200)
    | st.just("x" * 17_000)
)
invalid_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
frames_out = (
    texts.map(lambda text: ("text", text.encode("utf-8", "surrogatepass")))
    | st.binary(max_size=300).map(lambda data: ("binary", data))
    | st.builds(lambda a, b: ("text", a + b), st.binary(max_size=20), invalid_utf8)
)


async def exchange(target: str, sent: list[tuple[str, bytes]]) -> int | None:
    """Send the frames and a closing ping, read until its answer or the close; the close code."""
    async with connect(target, max_size=None) as client:
        try:
            for kind, data in sent:
                await client.send(data, text=kind == "text")
            await client.send('{"action":"ping"}')
            async with asyncio.timeout(RECV_LIMIT_S):
                while True:
                    reply = await client.recv()
                    if isinstance(reply, bytes):
                        continue  # replayed ticks
                    body: dict[str, Any] = json.loads(reply)
                    assert body["type"] in ("pong", "error", "subscribed", "unsubscribed"), body
                    if body["type"] == "pong" or body.get("code") == "rate_limited":
                        return None
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None


async def healthy_client_is_served(ws: FuzzedWs, tokens: Tokens) -> None:
    async with connect(url(ws, tokens)) as client:
        await client.send('{"action":"subscribe","idx":7,"lastSequence":149}')
        async with asyncio.timeout(RECV_LIMIT_S):
            assert json.loads(await client.recv())["type"] == "subscribed"
            assert isinstance(await client.recv(), bytes), "the replayed tick 150"
            await client.send('{"action":"ping"}')
            assert json.loads(await client.recv()) == {"type": "pong"}


def assert_no_traceback(ws: FuzzedWs) -> None:
    logged = ws.log.read_text(errors="replace")
    assert "Traceback" not in logged, logged[-4_000:]


async def raw_exchange(target: str, garbage: bytes) -> int | None:
    """Send bytes that need not be WebSocket frames after the handshake, then end the stream."""
    client = MuteClient(target)
    try:
        await client.open()
        await client.send_raw(garbage)
        client.sock.shutdown(socket.SHUT_WR)
        close = await client.read_until_closed()
        return close.code if close is not None else None
    finally:
        client.close()


def test_fuzzed_frames_never_get_1011_nor_a_traceback_and_others_are_still_served(
    fuzzed_ws: FuzzedWs, tokens: Tokens
) -> None:
    @FUZZ_SETTINGS
    @given(sent=st.lists(frames_out, min_size=1, max_size=12))
    def frames_are_answered(sent: list[tuple[str, bytes]]) -> None:
        code = asyncio.run(exchange(url(fuzzed_ws, tokens), sent))
        assert code is None or code in ALLOWED_CLOSE_CODES, code
        assert fuzzed_ws.process.poll() is None, "the ws process died"

    # NOTE: unmasked or malformed frames are the protocol's to refuse (1002); a frame that
    # happens to parse is answered like any other.
    @FUZZ_SETTINGS
    @given(garbage=st.binary(min_size=1, max_size=2_000))
    def raw_bytes_are_refused(garbage: bytes) -> None:
        code = asyncio.run(raw_exchange(url(fuzzed_ws, tokens), garbage))
        assert code is None or code in ALLOWED_CLOSE_CODES, code
        assert fuzzed_ws.process.poll() is None, "the ws process died"

    frames_are_answered()
    raw_bytes_are_refused()
    asyncio.run(healthy_client_is_served(fuzzed_ws, tokens))
    assert_no_traceback(fuzzed_ws)
