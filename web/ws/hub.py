"""Subscriptions and fan-out of one `ws` process.

One Redis pub/sub connection per process listens to every price and portfolio channel
(PSUBSCRIBE); each tick reaches only the connections subscribed to its instrument, each portfolio
frame only the connections of its user that asked for them. Ticks are gathered for one short
window (`coalesce_window_s`, from the first one's arrival) and then every connection gets at most
one price frame per cycle; connections due the same ticks share that frame's bytes.

A frame is written straight to the socket while the connection's write buffer is under
`write_limit_bytes`; otherwise it waits in the connection's outbox for its own sender task, which
evicts the client if the buffer does not drain within `send_timeout_s`. Nobody else waits for it.

Replay seam (`lastSequence`): the subscription is registered *before* the tick log is read and
holds live ticks until the replay is sent; every tick a subscription passes on must have a seq
above the last one it passed on. A tick missing from the log read was appended after it, so it
reaches the process's pub/sub after the registration: no gap; the seq rule removes duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from ftl.core.errors import Conflict, FtlError, NotFound, RateLimited, Unavailable
from ftl.store import keys
from ftl.store.ticks import Tick
from web.ws import frames
from web.ws.config import WsConfig
from web.ws.frames import Action, Command
from web.ws.limits import TokenBucket
from web.ws.metrics import WsMetrics

log = logging.getLogger(__name__)

LAST_SEEN_TTL_S = 86_400  # SPEC §7
PUBSUB_POLL_S = 1.0  # NOTE: bounded waits, so a dead Redis connection surfaces as an error
PUBSUB_RETRY_S = 1.0
# NOTE: a full collection is due after this many middle-generation ones: never, in practice.
AUTOMATIC_FULL_COLLECTIONS_OFF = 1 << 30
PORTFOLIO_PREFIX = keys.portfolio_channel("")


@dataclass(eq=False)
class Subscription:
    last_seq: int  # the highest seq passed on to the client (-1: none yet)
    held: list[Tick] | None = None  # live ticks held while the replay is read

    def passes(self, tick: Tick) -> bool:
        """Whether a live tick goes out now (the seam rule of the module docstring)."""
        if self.held is not None:
            self.held.append(tick)
            return False
        if tick.seq <= self.last_seq:
            return False
        self.last_seq = tick.seq
        return True


@dataclass(eq=False)
class Client:
    """One open connection: its user (from the token), subscriptions and outbox."""

    connection: ServerConnection
    user_id: str
    metrics: WsMetrics
    config: WsConfig
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    portfolio: bool = False
    bad_messages: int = 0
    outbox: asyncio.Queue[tuple[str | bytes, str]] = field(default_factory=asyncio.Queue)
    sender: asyncio.Task[None] | None = None
    commands: TokenBucket = field(init=False)
    patience: TokenBucket = field(init=False)  # what refused commands draw on (limits.py)
    over_rate_limit: bool = False  # kept sending while refused: to be closed (1008)

    def __post_init__(self) -> None:
        now = time.monotonic()
        config = self.config
        self.commands = TokenBucket.full(config.commands_per_s, config.command_burst, now)
        self.patience = TokenBucket.full(config.refusals_forgiven_per_s, config.refusal_burst, now)

    def closing_reason(self) -> str | None:
        """Why the server must close this connection (1008) now, if it must."""
        if self.bad_messages > self.config.max_bad_messages:
            return "bad_messages"
        if self.over_rate_limit:
            return "rate_limited"
        return None

    def offer(self, message: str | bytes, kind: str) -> None:
        """Send one message: text JSON for a str, binary for bytes."""
        if isinstance(message, str):
            wire = frames.wire_frame(message.encode(), frames.TEXT)
        else:
            wire = frames.wire_frame(message)
        if self.deliver(message, wire, kind):
            self.metrics.frames_sent[kind].inc()
            self.metrics.bytes_sent.inc(len(message))

    def deliver(self, message: str | bytes, wire: bytes, kind: str) -> bool:
        """Write the message, already framed as `wire`, now if the connection takes it, else
        queue it for the sender task (which counts it once sent); True when it was written now,
        uncounted."""
        connection = self.connection
        if connection.state is not State.OPEN:
            return False
        transport = connection.transport
        if not self.outbox.empty() or (
            transport.get_write_buffer_size() >= self.config.write_limit_bytes
        ):
            self.outbox.put_nowait((message, kind))
            return False
        # PERF: the frame goes straight to the transport: no task switch, no coroutine, no
        # framing per connection. Whole frames only, so it interleaves safely with websockets'
        # own writes (pings, close).
        transport.write(wire)
        return True

    async def send_loop(self) -> None:
        """Frames the connection could not take at once: each waits at most send_timeout_s for
        the write buffer to drain, or the client is evicted."""
        connection = self.connection
        while True:
            frame, kind = await self.outbox.get()
            if connection.state is not State.OPEN:
                return
            try:
                async with asyncio.timeout(self.config.send_timeout_s):
                    await connection.send(frame)
            except TimeoutError:
                if connection.state is State.OPEN:
                    # NOTE: its buffers are full, so a close frame could not reach it either.
                    self.metrics.evictions["slow_consumer"].inc()
                    log.info("evicting a slow consumer (user %s)", self.user_id)
                    connection.transport.abort()
                return
            except ConnectionClosed:
                return
            self.metrics.frames_sent[kind].inc()
            self.metrics.bytes_sent.inc(len(frame))


class Hub:
    def __init__(self, redis: Redis, config: WsConfig, metrics: WsMetrics) -> None:
        self.redis = redis
        self.config = config
        self.metrics = metrics
        self.clients: set[Client] = set()
        # instrument id -> its subscribers and their subscriptions to it
        self.price_subscribers: dict[str, dict[Client, Subscription]] = {}
        self.portfolio_subscribers: dict[str, set[Client]] = {}  # user id -> clients
        self.connections_per_user: Counter[str] = Counter()
        self._due: list[Tick] = []
        self._first_due_at = 0.0  # time.monotonic() of the arrival of the first tick in _due
        self._wake = asyncio.Event()
        self._arrived: list[str] = []  # users whose first connection opened, to announce
        self._left: dict[str, int] = {}  # users whose last connection closed -> epoch ms
        # (user id, connection id) of closed connections whose per-user cap entry is to go
        self._released: list[tuple[str, str]] = []
        self._presence_due = asyncio.Event()
        self._stopping = False
        self._last_full_collection = time.monotonic()
        if config.full_collection_period_s is not None:
            # NOTE: what exists at start-up (modules, config) is never garbage: out of every
            # collection's way; automatic collections stop at the middle generation.
            gc.freeze()
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, AUTOMATIC_FULL_COLLECTIONS_OFF)

    # -- lifecycle

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Listen to Redis and fan out while inside; returns once the PSUBSCRIBE is confirmed."""
        listening = asyncio.Event()
        tasks = [
            asyncio.create_task(self._listen(listening)),
            asyncio.create_task(self._fan_out_loop()),
        ]
        presence = asyncio.create_task(self._presence_loop())
        try:
            await listening.wait()
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # NOTE: stopped, not cancelled: redis-py can swallow a cancellation that lands inside
            # a pipeline, which would leave the loop waiting forever.
            self._stopping = True
            self._presence_due.set()
            await presence
            await self._record_presence()  # the users the closing server let go

    async def _listen(self, listening: asyncio.Event) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            while True:
                try:
                    if not pubsub.subscribed:
                        await pubsub.psubscribe(
                            keys.PRICE_CHANNEL_PATTERN, keys.PORTFOLIO_CHANNEL_PATTERN
                        )
                        listening.set()
                    message = await pubsub.get_message(timeout=PUBSUB_POLL_S)
                except RedisError as exc:
                    # NOTE: ticks published meanwhile are lost to live clients; they resubscribe
                    # with lastSequence (the tick log has them).
                    log.warning("Redis pub/sub failed, retrying: %s", exc)
                    await asyncio.sleep(PUBSUB_RETRY_S)
                    continue
                if message is not None:
                    self._on_message(message["pattern"], message["channel"], message["data"])
        finally:
            await pubsub.aclose()

    def _on_message(self, pattern: str, channel: str, data: str) -> None:
        if pattern == keys.PRICE_CHANNEL_PATTERN:
            try:
                tick = Tick.from_json(data)
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring a malformed tick on %s", channel)
                return
            self.metrics.ticks_received.inc()
            if not self._due:
                self._first_due_at = time.monotonic()
            self._due.append(tick)
            self._wake.set()
            return
        for client in self.portfolio_subscribers.get(channel.removeprefix(PORTFOLIO_PREFIX), ()):
            client.offer(data, "portfolio")

    async def _fan_out_loop(self) -> None:
        while True:
            await self._wake.wait()
            # NOTE: the window runs from the first due tick's arrival: ticks that queued up while
            # the last cycle was being written go out at once instead of waiting a window more.
            window_ends = self._first_due_at + self.config.coalesce_window_s
            await asyncio.sleep(window_ends - time.monotonic())
            self._wake.clear()
            due, self._due = self._due, []
            started = time.perf_counter()
            self.fan_out(due)
            self.metrics.fan_out_cycle.observe(time.perf_counter() - started)
            written_ms = time.time() * 1000
            for tick in due:
                self.metrics.tick_age.observe(max(0.0, written_ms - tick.at_ms) / 1000)
            self._collect_between_cycles()

    def _collect_between_cycles(self) -> None:
        """A full collection when one is owed, now that the cycle's frames are written (ticks
        come in bursts, so the time right after one is the quietest there is)."""
        period_s = self.config.full_collection_period_s
        if period_s is None or time.monotonic() - self._last_full_collection < period_s:
            return
        self._last_full_collection = time.monotonic()
        gc.collect()

    def fan_out(self, ticks: list[Tick]) -> None:
        """One cycle: every subscriber gets one frame with its due ticks, in arrival order.

        PERF: connections due the same ticks get the same frame, packed and framed once per
        cycle; what is left per connection is a lookup and one write of shared bytes. A
        connection's due ticks are the bits of an int, not a list: nothing is allocated per
        connection that the cyclic GC tracks, so a cycle's 10,000 temporaries cannot be promoted
        to the old generation and bring on a full collection (0.5 s at 10,000 connections)."""
        packed: list[bytes] = []
        due: dict[Client, int] = {}  # client -> bit n set for each packed[n] due to it
        for tick in ticks:
            instrument_id = str(tick.instrument_id)
            subscribers = self.price_subscribers.get(instrument_id)
            if not subscribers:
                continue
            bit = 1 << len(packed)
            packed.append(frames.pack_tick(tick))
            for client, subscription in subscribers.items():
                if subscription.passes(tick):
                    due[client] = due.get(client, 0) | bit
        built: dict[int, tuple[bytes, bytes]] = {}  # due bits -> (message, wire)
        written = written_bytes = 0
        for client, bits in due.items():
            frame = built.get(bits)
            if frame is None:
                oldest_first = [packed[n] for n in range(bits.bit_length()) if bits >> n & 1]
                message = frames.price_frame(oldest_first)
                frame = built[bits] = (message, frames.wire_frame(message))
            if client.deliver(frame[0], frame[1], "price"):
                written += 1
                written_bytes += len(frame[0])
        # PERF: counted once per cycle, not per frame.
        self.metrics.frames_sent["price"].inc(written)
        self.metrics.bytes_sent.inc(written_bytes)

    # -- connections and presence

    def connect(self, connection: ServerConnection, user_id: str) -> Client:
        client = Client(connection, user_id, self.metrics, self.config)
        client.sender = asyncio.create_task(client.send_loop())
        self.clients.add(client)
        self.metrics.connections.inc()
        self.connections_per_user[user_id] += 1
        if self.connections_per_user[user_id] == 1:
            self._arrived.append(user_id)
            self._presence_due.set()
        return client

    def disconnect(self, client: Client) -> None:
        if client.sender is not None:
            client.sender.cancel()
        for instrument_id in list(client.subscriptions):
            self._drop(client, instrument_id)
        if client.portfolio:
            self._portfolio_drop(client)
        self.clients.discard(client)
        self.metrics.connections.dec()
        self._released.append((client.user_id, str(client.connection.id)))
        self._presence_due.set()
        self.connections_per_user[client.user_id] -= 1
        if self.connections_per_user[client.user_id] == 0:
            del self.connections_per_user[client.user_id]
            self._left[client.user_id] = int(time.time() * 1000)

    async def _presence_loop(self) -> None:
        while not self._stopping:
            await self._presence_due.wait()
            self._presence_due.clear()
            await self._record_presence()

    async def _record_presence(self) -> None:
        """Publish `user:reconnect` for users who arrived, set `last_seen` for users who left and
        drop closed connections from the per-user cap (web/ws/limits.py), all in one pipeline.

        PERF: a replica restarting or a network blip moves thousands of users at once; one round
        trip for all of them, rather than one Redis connection each, keeps the pool free."""
        arrived, self._arrived = self._arrived, []
        left, self._left = self._left, {}
        released, self._released = self._released, []
        if not arrived and not left and not released:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id in arrived:
                    pipe.publish(keys.USER_RECONNECT_CHANNEL, user_id)
                for user_id, at_ms in left.items():
                    pipe.set(keys.last_seen(user_id), at_ms, ex=LAST_SEEN_TTL_S)
                for user_id, connection_id in released:
                    pipe.zrem(keys.ws_connections(user_id), connection_id)
                await pipe.execute()
        except RedisError as exc:
            # NOTE: an unreleased connection's lease lapses on its own (decision 0122).
            log.warning(
                "presence of %d users and release of %d connections not recorded: %s",
                len(arrived) + len(left),
                len(released),
                exc,
            )

    # -- commands

    async def handle(self, client: Client, message: str | bytes) -> None:
        """Carry out one client message; a bad one gets an error frame and counts against it.

        PERF: the rate check comes first and is O(1), so a flood costs no parsing."""
        now = time.monotonic()
        if not client.commands.take(now):
            if client.patience.take(now):
                refused = RateLimited(math.ceil(client.commands.wait_s()), "Too many commands.")
                client.offer(frames.error_frame(refused), "reply")
            else:
                client.over_rate_limit = True
            return
        try:
            command = frames.parse_command(message)
            if command.action is Action.PING:
                client.offer(frames.PONG, "reply")
            elif command.action is Action.SUBSCRIBE_PORTFOLIO:
                self._portfolio_add(client)
                client.offer(frames.PORTFOLIO_SUBSCRIBED, "reply")
            else:
                idx, instrument_id = await self._resolve(command)
                if command.action is Action.SUBSCRIBE:
                    await self._subscribe(client, idx, instrument_id, command.last_sequence)
                else:
                    self._drop(client, instrument_id)
                    client.offer(frames.unsubscribed_frame(idx, instrument_id), "reply")
        except FtlError as error:
            client.bad_messages += 1
            if client.bad_messages <= self.config.max_bad_messages:
                client.offer(frames.error_frame(error), "reply")
        except RedisError as exc:
            log.warning("Redis failed during a command: %s", exc)
            unavailable = Unavailable("unavailable", "Try again in a moment.")
            client.offer(frames.error_frame(unavailable), "reply")

    async def _resolve(self, command: Command) -> tuple[int, str]:
        """(idx, instrument id) of the instrument a command names; NotFound if there is none."""
        if command.idx is not None:
            found = await self.redis.hget(keys.INSTRUMENT_IDX, str(command.idx))
            if found is not None:
                return command.idx, str(found)
        else:
            instrument_id = str(command.instrument_id)
            idx = await self.redis.hget(keys.instrument(instrument_id), "idx")
            if idx is not None:
                return int(idx), instrument_id
        raise NotFound("unknown_instrument", "No such instrument.")

    async def _subscribe(
        self, client: Client, idx: int, instrument_id: str, last_sequence: int | None
    ) -> None:
        subscription = client.subscriptions.get(instrument_id)
        if subscription is None:
            if len(client.subscriptions) >= self.config.max_subscriptions:
                raise Conflict(
                    "too_many_subscriptions",
                    f"At most {self.config.max_subscriptions} instruments per connection.",
                )
            subscription = client.subscriptions[instrument_id] = Subscription(last_seq=-1)
            self.price_subscribers.setdefault(instrument_id, {})[client] = subscription
            self.metrics.subscriptions.inc()
        client.offer(frames.subscribed_frame(idx, instrument_id), "reply")
        if last_sequence is None:
            return
        # NOTE: commands of one connection are handled one at a time, so no replay overlaps.
        subscription.held = []
        subscription.last_seq = last_sequence
        try:
            logged: list[str] = await self.redis.zrangebyscore(  # type: ignore[assignment]
                keys.tick_log(instrument_id), f"({last_sequence}", "+inf"
            )
        finally:
            held, subscription.held = subscription.held, None
        packed: list[bytes] = []
        for tick in [*(Tick.from_json(member) for member in logged), *held]:
            if tick.seq > subscription.last_seq:
                subscription.last_seq = tick.seq
                packed.append(frames.pack_tick(tick))
        # SPEC §7: one command per 100 replayed ticks; the subscribe itself paid the first.
        cost = math.ceil(len(packed) / self.config.replay_ticks_per_command)
        if cost > 1:
            client.commands.owe(cost - 1, time.monotonic())
        step = self.config.replay_frame_ticks
        for start in range(0, len(packed), step):
            client.offer(frames.price_frame(packed[start : start + step]), "price")

    def _drop(self, client: Client, instrument_id: str) -> None:
        if client.subscriptions.pop(instrument_id, None) is None:
            return
        self.metrics.subscriptions.dec()
        subscribers = self.price_subscribers.get(instrument_id)
        if subscribers is not None:
            subscribers.pop(client, None)
            if not subscribers:
                del self.price_subscribers[instrument_id]

    def _portfolio_add(self, client: Client) -> None:
        # APPSEC: keyed by the token's user only; no message can name another user.
        client.portfolio = True
        self.portfolio_subscribers.setdefault(client.user_id, set()).add(client)

    def _portfolio_drop(self, client: Client) -> None:
        subscribers = self.portfolio_subscribers.get(client.user_id)
        if subscribers is not None:
            subscribers.discard(client)
            if not subscribers:
                del self.portfolio_subscribers[client.user_id]
