"""The connections to Redis, the hot state (SPEC §2): redis-py's pool for everything, and one
pipelined connection per process for the trade calls (PipelinedConnection)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ftl.core.config import Settings

REDIS_TIMEOUT_S = 3.0
REQUIRED_EVICTION_POLICY = "noeviction"
PIPELINED_SCHEMES = ("redis://", "unix://")  # not rediss://: the trade calls then use the pool

KeyOrArg = str | int | float | bytes


def connect(settings: Settings, *, pool_size: int | None = None) -> Redis:
    """A pooled client; replies decoded as UTF-8 text.

    With `pool_size`, a caller beyond that many concurrent commands waits (up to REDIS_TIMEOUT_S)
    for a free connection instead of failing: for bursts such as thousands of WebSocket
    handshakes at once.
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": REDIS_TIMEOUT_S,
        "socket_timeout": REDIS_TIMEOUT_S,
        "health_check_interval": 30,
    }
    if pool_size is None:
        return Redis.from_url(settings.redis_url, **options)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=pool_size, timeout=REDIS_TIMEOUT_S, **options
    )
    return Redis.from_pool(pool)


async def eviction_policy(redis: Redis) -> str:
    config = await redis.config_get("maxmemory-policy")
    return str(config.get("maxmemory-policy", ""))


class PipelinedConnection:
    """One connection to Redis shared by every concurrent caller of this process: a command is
    written at once, without waiting for the replies to earlier ones, and Redis answers in order,
    so each reply goes to the oldest caller still waiting (pipelining).

    PERF: a call through redis-py's pool costs ~105 µs of this process's CPU (pool checkout,
    retry and timeout wrappers, command packing in Python); here ~35 µs alone and ~6 µs when
    other calls are in flight, as their writes and reads share system calls (decision 0023).
    Only the trade calls use it: a few commands, no blocking, no pub/sub, no transactions.

    Failures behave as redis-py's do for a caller: RedisError subclasses. A reply error is its
    ResponseError (redis-py's own mapping); a connection lost fails every waiting caller with
    ConnectionError and the next call connects again; when the oldest waiting call has had no
    reply for `timeout_s`, the connection is taken for dead and dropped (TimeoutError to all), as
    later replies cannot come before it. A caller that gives up (cancelled) leaves its slot in
    the queue, so the replies after it still reach their callers.
    """

    def __init__(self, url: str, timeout_s: float = REDIS_TIMEOUT_S) -> None:
        self.options = parse_url(url)
        self.timeout_s = timeout_s
        self._protocol: _PipelineProtocol | None = None
        self._connecting: asyncio.Task[_PipelineProtocol] | None = None

    @staticmethod
    def supports(url: str) -> bool:
        return url.startswith(PIPELINED_SCHEMES)

    async def execute(self, *args: KeyOrArg) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.failure is not None or not protocol.on_running_loop():
            protocol = await self._connect()
        return await protocol.send(args)

    async def _connect(self) -> _PipelineProtocol:
        loop = asyncio.get_running_loop()
        task = self._connecting
        if task is None or task.get_loop() is not loop:
            task = self._connecting = loop.create_task(self._open(loop))
        try:
            # NOTE: shielded: one caller giving up must not abort the connect the others wait on.
            protocol = await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None
        self._protocol = protocol
        return protocol

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _PipelineProtocol:
        options = self.options
        where = options.get("path") or f"{options.get('host')}:{options.get('port', 6379)}"
        protocol: _PipelineProtocol | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                if "path" in options:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _PipelineProtocol(loop, self.timeout_s), options["path"]
                    )
                else:
                    _, protocol = await loop.create_connection(
                        lambda: _PipelineProtocol(loop, self.timeout_s),
                        options.get("host", "127.0.0.1"),
                        options.get("port", 6379),
                    )
                if options.get("password"):
                    user = [options["username"]] if options.get("username") else []
                    await protocol.send(("AUTH", *user, options["password"]))
                if options.get("db"):
                    await protocol.send(("SELECT", options["db"]))
        except BaseException as exc:
            # NOTE: a connection refused its AUTH or SELECT is dropped, never left open.
            if protocol is not None:
                protocol.fail(RedisConnectionError("The connection was not set up."))
            if isinstance(exc, TimeoutError):  # asyncio's, the builtin
                raise RedisTimeoutError(f"Timeout connecting to Redis at {where}") from exc
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"Error connecting to Redis at {where}: {exc}") from exc
            raise
        return protocol

    async def aclose(self) -> None:
        if self._protocol is not None:
            self._protocol.fail(RedisConnectionError("The connection was closed."))
            self._protocol = None


class _PipelineProtocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        # NOTE: redis-py's own error mapping (its hiredis parser passes the same callable).
        self.reader = hiredis.Reader(
            protocolError=InvalidResponse, replyError=BaseParser.parse_error, encoding="utf-8"
        )
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.failure: RedisError | None = None
        self.watchdog: asyncio.TimerHandle | None = None

    def on_running_loop(self) -> bool:
        return self.loop is asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # NOTE: uvloop's transports are not subclasses of asyncio's, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, args: Sequence[KeyOrArg]) -> asyncio.Future[Any]:
        if self.failure is not None:
            raise self.failure
        assert self.transport is not None
        future = self.loop.create_future()
        self.waiting.append((future, self.loop.time()))
        # NOTE: hiredis's stub types the tuple as one element long; it takes any length.
        self.transport.write(hiredis.pack_command(tuple(args)))  # type: ignore[arg-type]
        if self.watchdog is None:
            self.watchdog = self.loop.call_later(self.timeout_s, self._check_oldest)
        return future

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        try:
            while (reply := self.reader.gets()) is not False:
                future, _ = waiting.popleft()
                if future.done():  # its caller gave up
                    continue
                if isinstance(reply, RedisError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except (InvalidResponse, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.fail(RedisConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(
            RedisConnectionError(f"Connection to Redis lost: {exc or 'closed by the server'}")
        )

    def fail(self, failure: RedisError) -> None:
        if self.failure is not None:
            return
        self.failure = failure
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(failure)

    def _check_oldest(self) -> None:
        self.watchdog = None
        if not self.waiting or self.failure is not None:
            return
        left = self.waiting[0][1] + self.timeout_s - self.loop.time()
        if left <= 0:
            self.fail(RedisTimeoutError(f"Redis did not answer within {self.timeout_s} s"))
        else:
            self.watchdog = self.loop.call_later(left, self._check_oldest)
