"""Procfile counts (issue 21): every kind runs two copies under honcho (the runner of `make run`).
`worker`, `flusher` and `poller` copies serve their own /metrics at METRICS_PORT + copy - 1
(docs/decisions/0141); `web` and `ws` copies listen at WEB_PORT / WS_PORT + 100 × (copy - 1)
(docs/decisions/0143). Each copy is scraped here and its figures checked by value."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ftl.core.multiproc import COPY_PORT_STRIDE
from ftl.store import keys
from tests.e2e.conftest import environment, free_port
from tests.e2e.test_metrics_processes import (
    METRICS_TOKEN,
    SCRAPER,
    WAIT_S,
    samples,
    scrape_until,
)
from workers import flush, margin
from workers.queues import NAMESPACE

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RUNNER = (sys.executable, "scripts/procs.py", "start")
KINDS = ("worker", "flusher", "poller")
BIN = Path(sys.executable).parent
SCRAPED = {"METRICS_TOKEN": METRICS_TOKEN}
COPIES = 2
STOP_WAIT_S = 40
# NOTE: six launchers, each starting its Dramatiq and metrics processes, on a loaded machine.
START_WAIT_S = 120
REPLAYS = 6
SNAPSHOTS = 4
DEAD_LETTERS = 2
BREAKER_FAILURES = 3
Key = tuple[str, tuple[Any, ...]]


def free_ports(count: int, stride: int = 1) -> int:
    """A first port with `count` free ports `stride` apart from it on."""
    while True:
        first = free_port()
        try:
            for n in range(count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", first + stride * n))
        except (OSError, OverflowError):
            continue
        return first


@contextlib.contextmanager
def honcho(
    procfile: Path, counts: str, kinds: tuple[str, ...], env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`scripts/procs.py start -c counts` (honcho, as `make run`) on `procfile`: the runner and
    its log; stopped (killed if it hangs) on the way out."""
    log_path = procfile.with_suffix(".log")
    with log_path.open("wb") as log:
        runner = subprocess.Popen(
            [*RUNNER, "-f", str(procfile), "-d", str(ROOT), "-c", counts, *kinds],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield runner, log_path
        finally:
            runner.terminate()
            try:
                runner.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                os.killpg(runner.pid, signal.SIGKILL)
                raise


def procfile(path: Path) -> dict[str, int]:
    """The Procfile's Dramatiq kinds, written to `path` with free metrics ports; each kind's
    first port."""
    first_ports: dict[str, int] = {}
    lines = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        name = line.split(":", 1)[0]
        if name in KINDS:
            first_ports[name] = free_ports(COPIES)
            lines.append(re.sub(r"\bMETRICS_PORT=\d+", f"METRICS_PORT={first_ports[name]}", line))
    assert set(first_ports) == set(KINDS), "every kind sets its METRICS_PORT in the Procfile"
    path.write_text("\n".join(lines) + "\n")
    return first_ports


@pytest.fixture
def two_of_each(schema: str, clean: None, tmp_path: Path) -> Iterator[dict[str, list[str]]]:
    """honcho -c worker=2,flusher=2,poller=2 on the Procfile: each kind's /metrics URLs."""
    first_ports = procfile(tmp_path / "Procfile")
    counts = ",".join(f"{kind}={COPIES}" for kind in KINDS)
    # NOTE: the Procfile's `python` is this environment's, as `make run` puts it on PATH.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **SCRAPED}
    with honcho(tmp_path / "Procfile", counts, KINDS, env) as (runner, log):
        urls = {
            kind: [f"http://127.0.0.1:{first + n}/metrics" for n in range(COPIES)]
            for kind, first in first_ports.items()
        }
        for url in (url for each in urls.values() for url in each):
            wait_until_served(url, runner, log)
        yield urls


def wait_until_served(url: str, honcho: subprocess.Popen[bytes], log: Path) -> None:
    """Until `url` answers; honcho stops every copy when one fails, which fails this at once."""
    deadline = time.monotonic() + START_WAIT_S
    while True:
        try:
            if httpx.get(url, headers=SCRAPER, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert honcho.poll() is None, f"a copy failed:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"{url} not served:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def test_two_copies_of_every_kind_are_each_scraped(
    two_of_each: dict[str, list[str]], redis_admin: redis.Redis
) -> None:
    # Facts of the deployment every copy reads from Redis at its scrape.
    redis_admin.hset(
        keys.SPORTMONKS_BREAKER,
        mapping={"state": "closed", "failures": BREAKER_FAILURES, "openedAtMs": 0},
    )
    redis_admin.hset(keys.SPORTMONKS_BREAKER, "probeStartedMs", 0)
    for n in range(DEAD_LETTERS):
        redis_admin.zadd(f"{NAMESPACE}:sportmonks.XQ", {f"dead-{n}": n})
    shared = {
        ("ftl_redis_up", ()): 1,
        ("ftl_sportmonks_breaker_failures", ()): BREAKER_FAILURES,
        ("ftl_queue_dead_letters", (("queue", "sportmonks"),)): DEAD_LETTERS,
    }
    urls = [url for kind in KINDS for url in two_of_each[kind]]
    assert len(set(urls)) == len(KINDS) * COPIES
    for url in urls:
        figures = scrape_until(url, lambda f: all(f.get(k) == v for k, v in shared.items()))
        assert {k: figures[k] for k in shared} == shared, url

    # Each copy's own figures: the messages it processed, counted once across the copies.
    for _ in range(REPLAYS):
        margin.replay_user.send(str(uuid.uuid4()))  # users with nothing open: a no-op each
    for _ in range(SNAPSHOTS):
        flush.snapshot_leaderboards.send()
    replays = ("dramatiq_messages_total", (("actor_name", "replay_user"), ("queue_name", "margin")))
    snapshots = (
        "dramatiq_messages_total",
        (("actor_name", "snapshot_leaderboards"), ("queue_name", "flush")),
    )
    for kind, key, sent in (("worker", replays, REPLAYS), ("flusher", snapshots, SNAPSHOTS)):
        # NOTE: the copies share the queue: each counts the messages it took, none twice.
        counted = wait_for_total(two_of_each[kind], key, sent)
        assert sum(counted.values()) == sent, (kind, counted)


def wait_for_total(urls: list[str], key: Key, total: float) -> dict[str, float]:
    """Each URL's value of `key` once they add up to `total`."""
    deadline = time.monotonic() + WAIT_S
    while True:
        counted = {
            url: scrape_until(url, lambda f: ("ftl_redis_up", ()) in f).get(key, 0) for url in urls
        }
        if sum(counted.values()) >= total:
            return counted
        assert time.monotonic() < deadline, f"{urls} counted {counted}, not {total}"
        time.sleep(0.2)


WEB_KINDS = ("web", "ws")
HEALTH_CHECKS = 3
REFUSED_UPGRADES = 2


@pytest.fixture
def two_webs_and_two_ws(schema: str, clean: None, tmp_path: Path) -> Iterator[dict[str, list[str]]]:
    """honcho -c web=2,ws=2 on the Procfile's own `web` and `ws` lines: each copy's base URL."""
    lines = [
        line
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.split(":", 1)[0] in WEB_KINDS
    ]
    (tmp_path / "Procfile").write_text("\n".join(lines) + "\n")
    bases = {kind: free_ports(COPIES, COPY_PORT_STRIDE) for kind in WEB_KINDS}
    env = environment(
        {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "WEB_PORT": str(bases["web"]),
            "WS_PORT": str(bases["ws"]),
            "WEB_CONCURRENCY": "1",
            **SCRAPED,
        }
    )
    counts = ",".join(f"{kind}={COPIES}" for kind in WEB_KINDS)
    with honcho(tmp_path / "Procfile", counts, WEB_KINDS, env) as (runner, log):
        urls = {
            kind: [f"http://127.0.0.1:{base + COPY_PORT_STRIDE * n}" for n in range(COPIES)]
            for kind, base in bases.items()
        }
        for url in (url for each in urls.values() for url in each):
            wait_until_served(f"{url}/metrics", runner, log)
        yield urls


def figures(url: str) -> dict[Key, float]:
    return samples(httpx.get(f"{url}/metrics", headers=SCRAPER, timeout=5).text)


def test_two_copies_of_web_and_ws_each_serve_and_are_scraped(
    two_webs_and_two_ws: dict[str, list[str]],
) -> None:
    webs, sockets = two_webs_and_two_ws["web"], two_webs_and_two_ws["ws"]
    health = (
        "ftl_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/health"), ("status", "200")),
    )
    before = [figures(url).get(health, 0) for url in webs]
    for _ in range(HEALTH_CHECKS):
        assert httpx.get(f"{webs[1]}/health", timeout=5).status_code == 200
    # Only the second copy served them: each copy's figures are its own.
    assert [figures(url).get(health, 0) - was for url, was in zip(webs, before, strict=True)] == [
        0,
        HEALTH_CHECKS,
    ]

    refused = ("ftl_ws_handshake_rejections_total", (("code", "unauthorized"),))
    for _ in range(REFUSED_UPGRADES):
        with pytest.raises(InvalidStatus) as upgrade:
            connect(f"{sockets[1].replace('http', 'ws', 1)}/ws/prices", open_timeout=5)
        assert upgrade.value.response.status_code == 401
    assert [figures(url).get(refused, 0) for url in sockets] == [0, REFUSED_UPGRADES]
