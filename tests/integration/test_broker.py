"""The Dramatiq broker: explicit middleware, async actors running against the real Redis broker."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from typing import Any

import dramatiq
import pytest
import redis as sync_redis
from dramatiq import Worker
from dramatiq.asyncio import get_event_loop_thread

import workers.email
import workers.flush
import workers.fulltime
import workers.margin
import workers.poller
from ftl.core.config import Settings
from ftl.store.services import Services
from workers import runtime
from workers.arguments import RULES, InvalidMessage
from workers.broker import build_broker
from workers.flush import MAX_AGE_MS, QUEUE, flush, stale
from workers.queues import NAMESPACE

EXPECTED_MIDDLEWARE = [
    "ValidateArguments",
    "AgeLimit",
    "TimeLimit",
    "ShutdownNotifications",
    "Callbacks",
    "Pipelines",
    "Retries",
    "CurrentMessage",
    "AsyncIO",
    "RequestIds",
]
broker = runtime.broker()


def test_middleware_is_chosen_explicitly(settings: Settings) -> None:
    # NOTE: a fresh broker, because a running Worker appends Dramatiq's own worker middleware.
    assert [type(m).__name__ for m in build_broker(settings).middleware] == (EXPECTED_MIDDLEWARE)
    # The process's runtime adds the shared adapters (and, where `python -m workers` set up its
    # metrics directory, Dramatiq's Prometheus middleware: tests/e2e/test_metrics_processes.py).
    assert dramatiq.get_broker() is broker is runtime.start()
    assert [type(m).__name__ for m in broker.middleware][: len(EXPECTED_MIDDLEWARE) + 1] == [
        *EXPECTED_MIDDLEWARE,
        "SharedServices",
    ]


def test_an_async_actor_runs_on_a_real_worker(settings: Settings, clean: None) -> None:
    @dramatiq.actor(queue_name="test_async", max_retries=0, max_age=60_000, time_limit=5_000)
    async def record(key: str, value: str) -> None:
        client = sync_redis.Redis.from_url(settings.redis_url)
        await asyncio.sleep(0)  # proves the actor body runs on the AsyncIO middleware's loop
        client.set(key, value)
        client.close()

    record.send("test:actor-ran", "yes")
    worker = Worker(broker, worker_threads=1, queues={"test_async"})
    worker.start()
    try:
        check = sync_redis.Redis.from_url(settings.redis_url, decode_responses=True)
        deadline = time.monotonic() + 10
        while check.get("test:actor-ran") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert check.get("test:actor-ran") == "yes"
        check.close()
    finally:
        worker.stop()


def test_the_actors_of_a_worker_share_one_services_closed_when_it_stops(
    settings: Settings, clean: None
) -> None:
    seen: list[Services] = []

    @dramatiq.actor(queue_name="test_shared", max_retries=0, max_age=60_000, time_limit=5_000)
    async def use_services() -> None:
        async with runtime.services() as svc:
            await svc.redis.ping()
            seen.append(svc)

    worker = Worker(broker, worker_threads=2, queues={"test_shared"})
    worker.start()
    made_at_boot = runtime._shared  # made on the actors' loop when the worker booted
    loop_thread = get_event_loop_thread()
    assert made_at_boot is not None and loop_thread is not None
    assert made_at_boot[0] is loop_thread.loop
    for _ in range(3):
        use_services.send()
    try:
        broker.join("test_shared", timeout=10_000)
        worker.join()
    finally:
        worker.stop()

    assert len(seen) == 3 and seen[0] is seen[1] is seen[2] is made_at_boot[1]
    assert runtime._shared is None  # closed on the actors' loop, before the loop stopped


def test_a_stale_flush_message_is_skipped_quietly_not_dead_lettered(
    settings: Settings, clean: None, caplog: pytest.LogCaptureFixture
) -> None:
    stale_at_ms = int(time.time() * 1000) - 2 * MAX_AGE_MS
    message = flush.message().copy(message_timestamp=stale_at_ms)
    assert stale(message) and not stale(flush.message()) and not stale(None)
    broker.enqueue(message)
    caplog.set_level(logging.DEBUG, logger="workers.flush")
    worker = Worker(broker, worker_threads=1, queues={QUEUE})
    worker.start()
    try:
        broker.join(QUEUE, timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    check = sync_redis.Redis.from_url(settings.redis_url)
    assert check.zcard(f"{NAMESPACE}:{QUEUE}.XQ") == 0  # no dead letter
    check.close()
    assert "flush: a newer message does this run" in caplog.text


# The modules whose actors the Procfile's processes run.
ACTOR_MODULES = (
    "workers.email",
    "workers.flush",
    "workers.fulltime",
    "workers.margin",
    "workers.poller",
)


def test_every_parameter_of_every_actor_has_an_argument_rule() -> None:
    ours = [actor for actor in broker.actors.values() if actor.fn.__module__ in ACTOR_MODULES]
    assert {actor.actor_name for actor in ours} >= {
        "replay_user",
        "evaluate_instruments",
        "evaluate_holders",
        "evaluate_traded",
        "evaluate_follow_up",
        "backstop_sweep",
        "send_email",
        "full_time",
        "flush",
        "snapshot_leaderboards",
        "poll_sportmonks",
    }
    for actor in ours:
        for name in inspect.signature(actor.fn).parameters:
            assert name in RULES, f"{actor.actor_name}({name}) has no rule in workers/arguments.py"


BAD_SENDS: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
    (workers.margin.replay_user, ("garbage",), {}),
    (workers.margin.replay_user, (str(uuid.uuid4()), "last tuesday"), {}),
    (workers.margin.replay_user, (str(uuid.uuid4()), "2026-06-11T19:00:00"), {}),  # no zone
    (workers.margin.replay_user, (str(uuid.uuid4()),), {"sinse": None}),
    (workers.margin.replay_user, (), {}),
    (workers.margin.evaluate_instruments, ("not-a-list",), {}),
    (workers.margin.evaluate_instruments, ([str(uuid.uuid4())],), {"chunk_users": 0}),
    (workers.margin.evaluate_holders, ([str(uuid.uuid4()), 7],), {}),
    (workers.email.send_email, (42,), {}),
    (workers.fulltime.full_time, ("fixture-1",), {}),
    (workers.flush.flush, ("extra",), {}),
    (workers.poller.poll_sportmonks, (), {"now": 1}),
]


@pytest.mark.parametrize(
    ("actor", "args", "kwargs"),
    BAD_SENDS,
    ids=[f"{a.actor_name}{args!r}{kwargs!r}" for a, args, kwargs in BAD_SENDS],
)
def test_a_message_its_actor_cannot_take_raises_in_the_sender_and_is_not_enqueued(
    settings: Settings, clean: None, actor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    queued = sync_redis.Redis.from_url(settings.redis_url)
    queue_key = f"{NAMESPACE}:{actor.queue_name}"
    before = queued.llen(queue_key)
    with pytest.raises(InvalidMessage, match=actor.actor_name):
        actor.send(*args, **kwargs)
    assert queued.llen(queue_key) == before
    queued.close()


def test_a_good_message_is_enqueued(settings: Settings, clean: None) -> None:
    queued = sync_redis.Redis.from_url(settings.redis_url)
    workers.margin.replay_user.send(str(uuid.uuid4()), "2026-06-11T19:00:00+00:00")
    assert queued.llen(f"{NAMESPACE}:{workers.margin.QUEUE}") == 1
    queued.close()
