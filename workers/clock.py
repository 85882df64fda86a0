"""The clock (Procfile `clock`): the one process that enqueues periodic messages.

Any number of clocks may run; only the holder of the lease `lease:clock` (lua/lease_hold.lua:
taken or renewed every loop in one atomic step) sends, so each period fires once however many
clocks are up, and a standby takes over within LEASE_TTL_MS when the holder dies. What it sends
and how often is the table of workers/schedule.py.
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
from ftl.store import hotstore, keys
from ftl.store.scripts import read_scripts
from workers import runtime
from workers.schedule import SCHEDULE, Job, describe

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


def periodic(job: Job, client: redis.Redis, calls_per_hour: int) -> Periodic:
    """A line of the schedule as the clock runs it: sending to the job's actor."""
    send = runtime.broker().get_actor(job.actor).send
    varies = job.varies
    if varies is None:
        return Periodic(job.name, job.period_ms, send)
    return Periodic(job.name, lambda: varies(client, calls_per_hour), send)


def schedule(
    client: redis.Redis, calls_per_hour: int = Settings.sportmonks_calls_per_hour
) -> list[Periodic]:
    """Every job of workers/schedule.py, its actor declared (imported after the broker's set-up)."""
    from workers import flush, margin, poller  # noqa: F401  (declares the actors it names)

    return [periodic(job, client, calls_per_hour) for job in SCHEDULE]


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

    from workers import margin

    def enqueue(user_id: str) -> None:
        if clock.leader:
            margin.replay_user.send(user_id)

    async def listen() -> None:
        # NOTE: the process's adapters for the event loop each attempt runs on, closed with it.
        try:
            async with runtime.services() as svc:
                await margin.listen_for_reconnects(svc, enqueue, lambda: clock.running)
        finally:
            await runtime.close_services()

    while clock.running:
        try:
            asyncio.run(listen())
        except (redis.RedisError, OSError) as exc:
            log.warning("clock: reconnect listener lost Redis: %s", exc)
            time.sleep(1)


def main() -> None:
    settings = get_settings()
    logs.setup(settings.log_level)
    runtime.start()
    client = hotstore.connect_blocking(settings, socket_timeout=None)
    clock = Clock(client, schedule(client, settings.sportmonks_calls_per_hour))
    threading.Thread(target=replay_on_reconnect, args=(clock,), daemon=True).start()
    signal.signal(signal.SIGTERM, clock.stop)
    signal.signal(signal.SIGINT, clock.stop)
    log.info("clock: %s", ", ".join(describe(job) for job in SCHEDULE))
    clock.run()


if __name__ == "__main__":
    main()
