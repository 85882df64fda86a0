"""The connections to Redis, the hot state (SPEC §2): redis-py's pool for everything, and one
pipelined connection per process for the trade calls (PipelinedConnection).

Every Redis client of the product is built here: with REDIS_SENTINELS set, each one asks the
sentinels for the primary of REDIS_MASTER_NAME whenever it connects, so it follows a failover
without a restart (decision 0150).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
import redis
import redis.sentinel
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    InvalidResponse,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ftl.core.config import Settings

REDIS_TIMEOUT_S = 3.0
REQUIRED_EVICTION_POLICY = "noeviction"
PIPELINED_SCHEMES = ("redis://", "unix://")  # not rediss://: the trade calls then use the pool

# A write the primary refuses because too few replicas are connected (`min-replicas-to-write`):
# nothing was written, the client may retry (decision 0151).
NO_REPLICAS = "NOREPLICAS"

# NOTE: a sentinel that does not answer within a second is passed over for the next one.
SENTINEL_OPTIONS = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}

KeyOrArg = str | int | float | bytes


def writes_refused(exc: RedisError) -> bool:
    """Whether Redis refused a write for want of replicas (the reply code leads the message,
    also when a script's redis.call met it)."""
    return isinstance(exc, ResponseError) and str(exc).startswith(NO_REPLICAS)


def _options(**overrides: Any) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_connect_timeout": REDIS_TIMEOUT_S,
        "socket_timeout": REDIS_TIMEOUT_S,
        **overrides,
    }


def _url_options(settings: Settings) -> dict[str, Any]:
    """What REDIS_URL says besides the address (database, password, TLS), for sentinel clients."""
    options = dict(parse_url(settings.redis_url))
    for address in ("host", "port", "path", "connection_class"):
        options.pop(address, None)
    if settings.redis_url.startswith("rediss://"):
        options["ssl"] = True
    return options


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The primary's connections, found through the sentinels, with a cap that makes callers
    wait for a free connection (as BlockingConnectionPool) instead of failing."""


class _SentinelClient(Redis):
    """A client of the primary that closes its connections to the sentinels with its own."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        await cast(SentinelConnectionPool, self.connection_pool).sentinel_manager.aclose()


class _BlockingSentinelClient(redis.Redis):
    def close(self) -> None:
        super().close()
        cast(redis.sentinel.SentinelConnectionPool, self.connection_pool).sentinel_manager.close()


def connect(settings: Settings, *, pool_size: int | None = None, **overrides: Any) -> Redis:
    """A pooled client of the primary; replies decoded as UTF-8 text.

    With `pool_size`, a caller beyond that many concurrent commands waits (up to REDIS_TIMEOUT_S)
    for a free connection instead of failing: for bursts such as thousands of WebSocket
    handshakes at once. `overrides` change the connection options (socket_timeout, ...).
    """
    options = _options(health_check_interval=30, **overrides)
    if settings.redis_sentinels:
        sentinel = Sentinel(settings.redis_sentinels, sentinel_kwargs=SENTINEL_OPTIONS)
        options.update(_url_options(settings))
        if pool_size is not None:
            options.update(
                connection_pool_class=_BlockingSentinelPool,
                max_connections=pool_size,
                timeout=REDIS_TIMEOUT_S,
            )
        return cast(
            Redis,
            sentinel.master_for(settings.redis_master_name, redis_class=_SentinelClient, **options),
        )
    if pool_size is None:
        return Redis.from_url(settings.redis_url, **options)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=pool_size, timeout=REDIS_TIMEOUT_S, **options
    )
    return Redis.from_pool(pool)


def connect_blocking(settings: Settings, **overrides: Any) -> redis.Redis:
    """A client for threads without an event loop (the clock, the Dramatiq broker, metrics)."""
    options = _options(**overrides)
    if settings.redis_sentinels:
        sentinel = redis.sentinel.Sentinel(
            settings.redis_sentinels,
            sentinel_kwargs=SENTINEL_OPTIONS,
        )
        options.update(_url_options(settings))
        return cast(
            redis.Redis,
            sentinel.master_for(
                settings.redis_master_name, redis_class=_BlockingSentinelClient, **options
            ),
        )
    return redis.Redis.from_url(settings.redis_url, **options)


def pipelined(settings: Settings) -> PipelinedConnection | None:
    """The trade calls' connection, or None where it cannot serve (TLS: the pool serves)."""
    url = settings.redis_url
    if not PipelinedConnection.supports(url):
        return None
    if not settings.redis_sentinels:
        return PipelinedConnection(url)
    sentinel = Sentinel(settings.redis_sentinels, sentinel_kwargs=SENTINEL_OPTIONS)
    return PipelinedConnection(url, sentinel=(sentinel, settings.redis_master_name))


# The reply errors the trade calls can meet, as the classes (and messages) redis-py gives them,
# so callers handle both connections alike: the code is taken off the message; any other
# reply error is a ResponseError with the whole reply as its message. Written here rather than
# borrowed from redis-py's private parser module (decision 0152).
REPLY_ERRORS: dict[str, type[RedisError]] = {
    # NOTE: "ERR Function not found" reads "Function not found" (ftl/store/scripts.py).
    "ERR": ResponseError,
    "NOSCRIPT": NoScriptError,
    "READONLY": ReadOnlyError,
    "OOM": OutOfMemoryError,
    "LOADING": BusyLoadingError,
    "WRONGPASS": AuthenticationError,
    "NOAUTH": AuthenticationError,
}


def reply_error(reply: str) -> RedisError:
    code, _, rest = reply.partition(" ")
    error = REPLY_ERRORS.get(code)
    return ResponseError(reply) if error is None else error(rest)


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

    def __init__(
        self,
        url: str,
        timeout_s: float = REDIS_TIMEOUT_S,
        *,
        sentinel: tuple[Sentinel, str] | None = None,
    ) -> None:
        """With `sentinel` (the sentinels and the primary's name), each (re)connect goes to the
        primary they name then; else to the URL's address."""
        self.options = parse_url(url)
        self.timeout_s = timeout_s
        self.sentinel = sentinel
        self._protocol: _PipelineProtocol | None = None
        self._connecting: asyncio.Task[_PipelineProtocol] | None = None

    @staticmethod
    def supports(url: str) -> bool:
        return url.startswith(PIPELINED_SCHEMES)

    async def execute(self, *args: KeyOrArg) -> Any:
        protocol = await self._connected()
        return await protocol.send(args)

    async def execute_replicated(
        self, replicas: int, timeout_ms: int, *args: KeyOrArg
    ) -> tuple[Any, int]:
        """`execute`, then how many replicas hold every write of this connection so far (Redis
        WAIT), asked on the same connection: a WAIT on another one would not count this write.
        If the connection is lost in between, the caller gets ConnectionError (outcome unknown).
        """
        protocol = await self._connected()
        reply = await protocol.send(args)
        # NOTE: shielded: one caller giving up must not cancel the WAIT the others share.
        return reply, int(await asyncio.shield(protocol.replicated(replicas, timeout_ms)))

    async def _connected(self) -> _PipelineProtocol:
        protocol = self._protocol
        if protocol is None or protocol.failure is not None or not protocol.on_running_loop():
            protocol = await self._connect()
        return protocol

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
        host, port = options.get("host", "127.0.0.1"), options.get("port", 6379)
        if self.sentinel is not None:
            sentinels, name = self.sentinel
            host, port = await sentinels.discover_master(name)
        where = options.get("path") or f"{host}:{port}"
        protocol: _PipelineProtocol | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                if "path" in options and self.sentinel is None:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _PipelineProtocol(loop, self.timeout_s), options["path"]
                    )
                else:
                    _, protocol = await loop.create_connection(
                        lambda: _PipelineProtocol(loop, self.timeout_s), host, port
                    )
                if options.get("password"):
                    user = [options["username"]] if options.get("username") else []
                    try:
                        await protocol.send(("AUTH", *user, options["password"]))
                    except ResponseError as exc:  # also "no password is set": refused all alike
                        raise AuthenticationError(str(exc)) from exc
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
        if self.sentinel is not None:
            await self.sentinel[0].aclose()


class _PipelineProtocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self.reader = hiredis.Reader(
            protocolError=InvalidResponse, replyError=reply_error, encoding="utf-8"
        )
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.failure: RedisError | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.pending_wait: asyncio.Future[Any] | None = None

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

    def replicated(self, replicas: int, timeout_ms: int) -> asyncio.Future[Any]:
        """A WAIT on this connection, shared: callers ask after their write's reply came, so a
        WAIT still unanswered was sent after that write and covers it. Under load one WAIT
        confirms many trades (group commit) instead of each blocking the connection in turn."""
        if self.pending_wait is None or self.pending_wait.done():
            self.pending_wait = self.send(("WAIT", replicas, timeout_ms))
        return self.pending_wait

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        try:
            while (reply := self.reader.gets()) is not False:
                future, _ = waiting.popleft()
                if future.done():  # its caller gave up
                    continue
                if isinstance(reply, ReadOnlyError):
                    # NOTE: the primary we hold was demoted by a failover: connect again, to
                    # whichever the sentinels name now (redis-py's sentinel pool does the same).
                    future.set_exception(RedisConnectionError("The primary is now a replica."))
                    self.fail(RedisConnectionError("The primary is now a replica."))
                    return
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
