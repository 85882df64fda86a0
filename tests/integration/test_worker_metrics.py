"""/metrics of the Dramatiq processes (workers/metrics.py): the gauges read from Redis at scrape
time, against the real broker keys, breaker hash and flusher keys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Worker
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ftl.core.config import Settings
from ftl.sportmonks.breaker import Breaker, BreakerState
from ftl.store import keys
from tests.e2e.conftest import free_port
from workers import email, flush, fulltime, margin, poller  # noqa: F401  (declare every actor)
from workers.broker import NAMESPACE, broker
from workers.metrics import QUEUES, metrics_registry

WORKER_WAIT_S = 10


def scrape(client: redis.Redis, directory: Path) -> dict[tuple[str, tuple[Any, ...]], float]:
    text = generate_latest(metrics_registry(str(directory), client, NAMESPACE)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_queue_list_is_every_queue_an_actor_consumes() -> None:
    declared = {
        actor.queue_name
        for actor in broker.actors.values()
        if actor.fn.__module__.startswith("workers.")
    }
    assert set(QUEUES) == declared


def test_queue_depth_dead_letters_breaker_and_flusher_figures(
    settings: Settings, clean: None, tmp_path: Path
) -> None:
    @dramatiq.actor(queue_name="default", max_retries=0, max_age=60_000, time_limit=5_000)
    async def always_fails() -> None:
        raise RuntimeError("dead on arrival")

    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    always_fails.send()
    worker = Worker(broker, worker_threads=1, queues={"default"})
    worker.start()
    try:
        deadline = time.monotonic() + WORKER_WAIT_S
        while not client.zcard(f"{NAMESPACE}:default.XQ") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    for user in range(3):
        margin.replay_user.send(f"00000000-0000-0000-0000-00000000000{user}")
    for field, value in Breaker(BreakerState.OPEN, 5, 1_000).to_hash().items():
        client.hset(keys.SPORTMONKS_BREAKER, field, value)
    client.lpush(keys.FLUSH_LAG_SAMPLES, 120, 340, 80)
    client.xadd(keys.OUTBOX, {"k": "wallet"})

    figures = scrape(client, tmp_path)
    client.close()

    assert figures[("ftl_redis_up", ())] == 1
    assert figures[("ftl_queue_messages", (("queue", "margin"), ("state", "ready")))] == 3
    assert figures[("ftl_queue_messages", (("queue", "default"), ("state", "ready")))] == 0
    assert figures[("ftl_queue_dead_letters", (("queue", "default"),))] == 1
    assert figures[("ftl_queue_dead_letters", (("queue", "email"),))] == 0
    assert figures[("ftl_sportmonks_breaker_state", (("state", "open"),))] == 1
    assert figures[("ftl_sportmonks_breaker_state", (("state", "closed"),))] == 0
    assert figures[("ftl_sportmonks_breaker_failures", ())] == 5
    assert figures[("ftl_flush_recent_lag_seconds", ())] == pytest.approx(0.34)
    assert figures[("ftl_flush_outbox_entries", ())] == 1
    assert figures[("ftl_margin_outbox_entries", ())] == 0


def test_a_scrape_without_redis_says_so_instead_of_failing(tmp_path: Path) -> None:
    gone = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    figures = scrape(gone, tmp_path)
    assert figures[("ftl_redis_up", ())] == 0
    assert not [name for name, _ in figures if name.startswith("ftl_queue")]
