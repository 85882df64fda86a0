"""ftl.store.hotstore.PipelinedConnection against a real Redis: every caller gets its own reply, in
any interleaving, and failures reach exactly the callers they concern (decision 0023)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ftl.core.config import Settings
from ftl.store.hotstore import PipelinedConnection

# A script that keeps Redis busy for about `ARGV[1]` ms (Redis answers nothing else meanwhile).
BUSY = """
local t = redis.call('TIME')
local until_us = t[1] * 1000000 + t[2] + ARGV[1] * 1000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= until_us
return ARGV[2]
"""


@pytest.fixture
async def pipeline(settings: Settings, clean: None) -> AsyncIterator[PipelinedConnection]:
    connection = PipelinedConnection(settings.redis_url)
    yield connection
    await connection.aclose()


async def test_concurrent_callers_each_get_their_own_reply(
    pipeline: PipelinedConnection,
) -> None:
    async def echo(n: int) -> str:
        await asyncio.sleep(0.001 * (n % 3))  # interleave the writes
        reply: str = await pipeline.execute("ECHO", f"caller-{n}")
        return reply

    replies = await asyncio.gather(*(echo(n) for n in range(500)))

    assert replies == [f"caller-{n}" for n in range(500)]


async def test_replies_are_decoded_as_redis_py_decodes_them(
    pipeline: PipelinedConnection, redis_admin: redis.Redis
) -> None:
    assert await pipeline.execute("SET", "pipe:k", "välue") == "OK"
    assert await pipeline.execute("INCRBY", "pipe:n", 7) == 7
    assert await pipeline.execute("HSET", "pipe:h", "a", 1, "b", 2.5) == 2
    assert await pipeline.execute("HGETALL", "pipe:h") == ["a", "1", "b", "2.5"]
    assert await pipeline.execute("GET", "pipe:missing") is None
    # NOTE: the URL's database (the tests' own) is the one written.
    assert redis_admin.get("pipe:k") == "välue"


async def test_an_error_reply_fails_its_caller_only(pipeline: PipelinedConnection) -> None:
    await pipeline.execute("SET", "pipe:s", "x")
    results = await asyncio.gather(
        pipeline.execute("ECHO", "before"),
        pipeline.execute("LPUSH", "pipe:s", "y"),  # WRONGTYPE
        pipeline.execute("NO-SUCH-COMMAND"),
        pipeline.execute("ECHO", "after"),
        return_exceptions=True,
    )

    assert results[0] == "before" and results[3] == "after"
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
    assert isinstance(results[2], ResponseError) and "unknown command" in str(results[2])


async def test_a_caller_that_gives_up_does_not_take_another_callers_reply(
    pipeline: PipelinedConnection,
) -> None:
    slow = asyncio.ensure_future(pipeline.execute("EVAL", BUSY, 0, 200, "slow"))
    await asyncio.sleep(0.05)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow

    assert await pipeline.execute("ECHO", "mine") == "mine"
    assert await pipeline.execute("ECHO", "next") == "next"


async def test_a_connection_closed_under_waiting_callers_fails_them() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = PipelinedConnection(f"redis://127.0.0.1:{port}/0")
    try:
        results = await asyncio.gather(
            connection.execute("PING"), connection.execute("PING"), return_exceptions=True
        )
    finally:
        await connection.aclose()
        server.close()
        await server.wait_closed()

    assert all(isinstance(r, RedisConnectionError) for r in results), results


async def test_after_redis_drops_the_connection_the_next_call_reconnects(
    pipeline: PipelinedConnection, redis_admin: redis.Redis
) -> None:
    await pipeline.execute("CLIENT", "SETNAME", "pipe-under-test")
    (client,) = [c for c in redis_admin.client_list() if c.get("name") == "pipe-under-test"]
    redis_admin.client_kill_filter(_id=client["id"])
    await asyncio.sleep(0.1)  # the close reaches the event loop

    assert await pipeline.execute("ECHO", "again") == "again"
    assert await pipeline.execute("CLIENT", "GETNAME") is None  # a new connection


async def test_redis_that_does_not_answer_times_out_every_waiting_caller() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # reads everything, answers nothing
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = PipelinedConnection(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    try:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            connection.execute("PING"), connection.execute("PING"), return_exceptions=True
        )
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        await connection.aclose()
        server.close()
        await server.wait_closed()

    assert all(isinstance(r, RedisTimeoutError) for r in results)
    assert elapsed < 2  # the watchdog, not some socket default, ended the wait


async def test_nothing_listening_is_a_connection_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    connection = PipelinedConnection(f"redis://127.0.0.1:{port}/0")

    with pytest.raises(RedisConnectionError):
        await connection.execute("PING")


async def test_a_refused_password_is_the_callers_error_and_nothing_stays_open(
    settings: Settings,
) -> None:
    """The tests' Redis has no password: AUTH is refused, as a wrong password would be."""
    url = settings.redis_url.replace("redis://", "redis://:not-the-password@", 1)
    connection = PipelinedConnection(url)

    for _ in range(2):  # each call tries to connect again
        with pytest.raises(AuthenticationError):
            await connection.execute("PING")
    assert connection._protocol is None


@pytest.fixture
def unix_socket_redis(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not on PATH")
    socket_path = tmp_path / "redis.sock"
    options = ["--port", "0", "--unixsocket", str(socket_path), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [server, *options],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if socket_path.exists():
                break
            time.sleep(0.05)
        yield f"unix://{socket_path}?db=3"
    finally:
        process.terminate()
        process.wait(10)


async def test_a_unix_socket_url_and_its_database(unix_socket_redis: str) -> None:
    connection = PipelinedConnection(unix_socket_redis)
    try:
        assert await connection.execute("SET", "pipe:unix", "yes") == "OK"
    finally:
        await connection.aclose()

    check = redis.Redis.from_url(unix_socket_redis, decode_responses=True)
    assert check.get("pipe:unix") == "yes"
    check.close()


@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", "0" * 40, 0),  # NOSCRIPT: the path that reloads the scripts
        ("LPUSH", "pipe:string", "y"),  # WRONGTYPE
        ("NO-SUCH-COMMAND",),
        ("FCALL", "no_such_function", 0),  # how a lost Functions library shows
    ],
)
async def test_reply_errors_are_the_class_and_message_redis_py_gives(
    pipeline: PipelinedConnection, settings: Settings, command: tuple[str | int, ...]
) -> None:
    """Guards decision 0152: our own reply-error mapping must stay what redis-py raises, so a
    redis-py upgrade that changes its mapping fails here, not in production."""
    await pipeline.execute("SET", "pipe:string", "x")
    client = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        with pytest.raises(ResponseError) as by_redis_py:
            await client.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()
    with pytest.raises(ResponseError) as ours:
        await pipeline.execute(*command)

    assert type(ours.value) is type(by_redis_py.value)
    assert str(ours.value) == str(by_redis_py.value)


async def test_concurrent_writes_share_one_wait_on_their_own_connection(
    pipeline: PipelinedConnection, redis_admin: redis.Redis
) -> None:
    """Decision 0151's group commit: callers whose replies came while a WAIT is pending join it
    instead of each sending its own (the tests' Redis has no replica: every WAIT runs out)."""
    redis_admin.config_resetstat()
    callers = 50

    answers = await asyncio.gather(
        *(pipeline.execute_replicated(1, 50, "SET", f"pipe:w{n}", n) for n in range(callers))
    )

    assert answers == [("OK", 0)] * callers
    waits = int(redis_admin.info("commandstats")["cmdstat_wait"]["calls"])
    assert 1 <= waits < callers
