"""The clock (Procfile `clock`): the one process that enqueues periodic messages.

Any number of clocks may run; only the holder of the lease `lease:clock` (lua/lease_hold.lua:
taken or renewed every loop in one atomic step) sends, so each period fires once however many
clocks are up, and a standby takes over within LEASE_TTL_MS when the holder dies. The schedule
is a table: add a line per job.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import redis

from ftl.core import logs
from ftl.core.config import Settings, get_settings
from ftl.market import leaderboard
from ftl.sportmonks import budget
from ftl.store import hotstore, keys
from ftl.store.scripts import read_scripts
from ftl.store.services import Services
from ftl.trading.margin.backstop import BACKSTOP_PERIOD_S
from workers import flush, margin, poller

log = logging.getLogger("ftl.clock")

LEASE = keys.lease("clock")
LEASE_TTL_MS = 3_000
LOOP_S = 0.05


@dataclass
class Periodic:
    name: str
    period_ms: int | Callable[[], int]  # a callable is asked again after every send
    send: Callable[[], object]
    next_ms: int = 0

    def next_period_ms(self) -> int:
        return self.period_ms() if callable(self.period_ms) else self.period_ms


def sportmonks_poll_period_ms(
    client: redis.Redis, calls_per_hour: int = Settings.sportmonks_calls_per_hour
) -> int:
    """Every 2 s while the last poll saw a live fixture, every 60 s while it saw none (SPEC §5.2);
    the live interval stretched to the call budget and to what Sportmonks says is left, and no
    poll before a 429's pause ends (ftl/sportmonks/budget.py, decision 0103).

    NOTE: no answer on record (a fresh start, or no poll succeeded for LIVE_FIXTURES_TTL_S) polls
    at the live rate: the period is chosen right after sending, before that poll has answered,
    so a start during a match would otherwise wait a whole idle minute for its second poll.
    """
    live = client.get(keys.LIVE_FIXTURES)
    fields: dict[str, str] = client.hgetall(keys.SPORTMONKS_RATE_LIMIT)  # type: ignore[assignment]
    limit, paused_for = budget.read_limit(fields, now_ms())
    if live == "[]":
        return max(poller.IDLE_POLL_PERIOD_MS, paused_for)
    return budget.live_period_ms(poller.LIVE_POLL_PERIOD_MS, calls_per_hour, limit, paused_for)


def schedule(
    client: redis.Redis, calls_per_hour: int = Settings.sportmonks_calls_per_hour
) -> list[Periodic]:
    return [
        Periodic(
            "sportmonks-poll",
            lambda: sportmonks_poll_period_ms(client, calls_per_hour),
            poller.poll_sportmonks.send,
        ),
        Periodic("flush", flush.SEND_EVERY_MS, flush.flush.send),
        Periodic(
            "leaderboards", leaderboard.SNAPSHOT_INTERVAL_MS, flush.snapshot_leaderboards.send
        ),
        Periodic("margin-backstop", BACKSTOP_PERIOD_S * 1000, margin.backstop_sweep.send),
    ]


def now_ms() -> int:
    return int(time.time() * 1000)


class Clock:
    def __init__(self, client: redis.Redis, jobs: list[Periodic]) -> None:
        self.client = client
        self.jobs = jobs
        self.token = uuid.uuid4().hex
        self.running = True
        self.leader = False
        scripts = read_scripts()
        # NOTE: redis-py's Script runs EVALSHA and loads the source again on NOSCRIPT.
        self._hold = client.register_script(scripts["lease_hold"].source)
        self._release = client.register_script(scripts["lease_release"].source)

    def hold_lease(self) -> bool:
        return bool(self._hold(keys=[LEASE], args=[self.token, LEASE_TTL_MS]))

    def tick(self) -> int:
        """Send what is due; how many messages were sent."""
        self.leader = self.hold_lease()
        if not self.leader:
            return 0
        sent, current = 0, now_ms()
        for job in self.jobs:
            if current >= job.next_ms:
                job.send()
                job.next_ms = current + job.next_period_ms()
                sent += 1
        return sent

    def run(self) -> None:
        while self.running:
            try:
                self.tick()
            except redis.RedisError as exc:
                log.warning("clock: Redis unavailable: %s", exc)
                time.sleep(1)
            time.sleep(LOOP_S)
        self._release(keys=[LEASE], args=[self.token])

    def stop(self, signum: int, frame: FrameType | None) -> None:
        self.running = False


def replay_on_reconnect(clock: Clock) -> None:
    """The `user:reconnect` listener (SPEC §7), in a thread of the clock: only the lease holder
    enqueues, so each reconnect is replayed once however many clocks run."""

    def enqueue(user_id: str) -> None:
        if clock.leader:
            margin.replay_user.send(user_id)

    async def listen() -> None:
        # NOTE: its own adapters, closed with the event loop each attempt runs on.
        svc = Services.create(get_settings())
        try:
            await margin.listen_for_reconnects(svc, enqueue, lambda: clock.running)
        finally:
            await svc.close()

    while clock.running:
        try:
            asyncio.run(listen())
        except (redis.RedisError, OSError) as exc:
            log.warning("clock: reconnect listener lost Redis: %s", exc)
            time.sleep(1)


def main() -> None:
    logs.setup(get_settings().log_level)
    client = hotstore.connect_blocking(get_settings(), socket_timeout=None)
    clock = Clock(client, schedule(client, get_settings().sportmonks_calls_per_hour))
    threading.Thread(target=replay_on_reconnect, args=(clock,), daemon=True).start()
    signal.signal(signal.SIGTERM, clock.stop)
    signal.signal(signal.SIGINT, clock.stop)
    log.info("clock: %s", ", ".join(f"{j.name} every {j.period_ms} ms" for j in clock.jobs))
    clock.run()


if __name__ == "__main__":
    main()
