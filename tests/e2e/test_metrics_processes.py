"""`curl /metrics` on the real processes (docs/decisions/0060): `ftl web` merges the figures of
its gunicorn workers; a Dramatiq process started by `python -m workers` serves Dramatiq's figures,
the message waits and the Redis gauges on METRICS_PORT, and logs one JSON object per line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import free_port, running_web
from workers.margin import replay_user

pytestmark = pytest.mark.e2e

WAIT_S = 30
HEALTH_CHECKS = 20
WORKER_ARGS = ("--processes", "2", "--threads", "1", "--queues", "email", "margin")


def samples(text: str) -> dict[tuple[str, tuple[Any, ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_web_metrics_merge_every_gunicorn_worker(schema: str, clean: None) -> None:
    health = (("method", "GET"), ("route", "/health"), ("status", "200"))
    with running_web({"WEB_CONCURRENCY": "2"}) as web:
        before = samples(httpx.get(f"{web.url}/metrics", timeout=5).text)
        for _ in range(HEALTH_CHECKS):
            # NOTE: a new connection per request, so both workers take some of them.
            with httpx.Client() as http:
                assert http.get(f"{web.url}/health", timeout=5).status_code == 200
        port = web.url.rsplit(":", 1)[1]
        directory = Path(tempfile.gettempdir()) / f"ftl-metrics-web-{port}"
        scraped = httpx.get(f"{web.url}/metrics", timeout=5)
        writers = {path.stem.rsplit("_", 1)[1] for path in directory.glob("*.db")}

    assert scraped.status_code == 200
    count = ("ftl_http_request_duration_seconds_count", health)
    assert samples(scraped.text)[count] - before[count] == HEALTH_CHECKS
    assert len(writers) >= 2, writers  # both workers write where /metrics reads
    assert not directory.exists()  # gone with the server


METRICS_TOKEN = "worker-scrape-token"
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def worker(schema: str, clean: None, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`python -m workers` as the Procfile's `worker` runs it, with two processes."""
    port = free_port()
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers", "workers.email", "workers.margin", *WORKER_ARGS],
            env={**os.environ, "METRICS_PORT": str(port), "METRICS_TOKEN": METRICS_TOKEN},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}/metrics", log
    finally:
        # NOTE: SIGTERM to the parent only: it stops its children itself (a second SIGTERM
        # sent to the whole group makes Dramatiq's workers exit hard and can leave them hung).
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise


def scrape_until(url: str, ready: Any) -> dict[tuple[str, tuple[Any, ...]], float]:
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            figures = samples(httpx.get(url, headers=SCRAPER, timeout=2).text)
            if ready(figures):
                return figures
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} never showed the figures"
        time.sleep(0.2)


def test_a_worker_process_serves_dramatiq_and_ftl_figures(worker: tuple[str, Path]) -> None:
    url, log = worker
    replays = (("actor_name", "replay_user"), ("queue_name", "margin"))
    scrape_until(url, lambda f: ("ftl_redis_up", ()) in f)
    # APPSEC: with METRICS_TOKEN set, a scrape without it learns nothing.
    assert httpx.get(url, timeout=2).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer no"}, timeout=2).status_code == 401
    for _ in range(3):
        replay_user.send(str(uuid.uuid4()))  # users with nothing open: a quick no-op each
    # NOTE: a message counts in dramatiq_messages_total when it starts and in the duration
    # histogram when it ends: wait for the last of the three to end.
    figures = scrape_until(
        url, lambda f: f.get(("dramatiq_message_duration_milliseconds_count", replays)) == 3
    )

    assert figures[("dramatiq_messages_total", replays)] == 3
    assert figures[("ftl_dramatiq_message_wait_seconds_count", replays)] == 3
    assert figures.get(("dramatiq_message_errors_total", replays), 0) == 0
    assert figures[("ftl_queue_messages", (("queue", "margin"), ("state", "ready")))] == 0
    assert figures[("ftl_queue_dead_letters", (("queue", "margin"),))] == 0
    assert figures[("ftl_sportmonks_breaker_state", (("state", "closed"),))] == 1
    assert ("ftl_flush_recent_lag_seconds", ()) in figures
    assert ("ftl_margin_washout_delay_seconds_count", ()) in figures
    lines = log.read_text().splitlines()
    assert lines and all(json.loads(line)["level"] for line in lines)
