"""/metrics of a Dramatiq process (`worker`, `flusher`, `poller`): Dramatiq's own figures, the
product's (ftl/core/metrics.py), and gauges of shared state read from Redis at each scrape.

Dramatiq's Prometheus middleware records per message; its exposition server is replaced by
`serve_metrics`, which listens on METRICS_HOST:METRICS_PORT (not Dramatiq's `dramatiq_prom_*`
variables) and adds the Redis gauges. Those are facts of the whole deployment, not of the process,
so every Dramatiq process reports the same figures: aggregate them with `max`, never `sum`
(docs/decisions/0060).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.middleware.prometheus import Prometheus
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ftl.core import metrics
from ftl.core.config import get_settings
from ftl.sportmonks.breaker import Breaker, BreakerState
from ftl.store import hotstore, keys

log = logging.getLogger(__name__)

# Every queue an actor of workers/ consumes (tests/integration/test_worker_metrics.py keeps this
# in step with the actors).
QUEUES = ("default", "email", "margin", "flush", "sportmonks")
METRICS_REDIS_TIMEOUT_S = 2  # a scrape answers `ftl_redis_up 0` rather than hang
RECENT_LAG_SAMPLES = 100  # flusher batches the recent-lag gauge looks back over
WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)

MESSAGE_WAIT_SECONDS = Histogram(
    "ftl_dramatiq_message_wait_seconds",
    "From a message's first send to the start of its processing, by queue and actor (for"
    " margin.evaluate_instruments: the delay of the after-tick margin evaluation).",
    ["queue_name", "actor_name"],
    buckets=WAIT_BUCKETS_S,
)


class WorkerMetrics(Prometheus):
    """Dramatiq's Prometheus middleware, plus the wait of each message, served by
    `serve_metrics`."""

    @property
    def forks(self) -> list[Any]:
        return [serve_metrics]

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        super().before_process_message(broker, message)  # type: ignore[no-untyped-call]
        waited_s = time.time() - message.message_timestamp / 1000
        MESSAGE_WAIT_SECONDS.labels(message.queue_name, message.actor_name).observe(waited_s)


class SharedStateCollector(Collector):
    """Gauges read from Redis at scrape time: queue depth and dead letters of every queue, the
    Sportmonks breaker, the flusher's backlog and recent lag, the margin event backlog."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ftl_redis_up", "1 when this scrape could read Redis.")
        try:
            figures = list(self._read())
        except redis.RedisError as exc:
            log.warning("metrics: Redis unreadable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from figures

    def _read(self) -> Iterator[Metric]:
        with self.client.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                prefix = f"{self.namespace}:{queue}"
                pipe.llen(prefix)
                pipe.llen(f"{prefix}.DQ")
                pipe.zcard(f"{prefix}.XQ")
            pipe.hgetall(keys.SPORTMONKS_BREAKER)
            pipe.xlen(keys.OUTBOX)
            pipe.lrange(keys.FLUSH_LAG_SAMPLES, 0, RECENT_LAG_SAMPLES - 1)
            pipe.xlen(keys.MARGIN_OUTBOX)
            replies = pipe.execute()
        depth = GaugeMetricFamily(
            "ftl_queue_messages",
            "Messages waiting in a Dramatiq queue (ready: to be taken now; delayed: retries and"
            " delayed sends).",
            labels=["queue", "state"],
        )
        dead = GaugeMetricFamily(
            "ftl_queue_dead_letters",
            "Dead-lettered messages of a queue (kept 7 days by Dramatiq).",
            labels=["queue"],
        )
        for at, queue in enumerate(QUEUES):
            ready, delayed, dead_letters = replies[3 * at : 3 * at + 3]
            depth.add_metric([queue, "ready"], ready)
            depth.add_metric([queue, "delayed"], delayed)
            dead.add_metric([queue], dead_letters)
        yield depth
        yield dead
        breaker_hash, outbox, lag_ms, margin_outbox = replies[3 * len(QUEUES) :]
        yield from _breaker_figures(Breaker.from_hash(breaker_hash))
        yield GaugeMetricFamily(
            "ftl_flush_outbox_entries",
            "Entries of the trade outbox stream not yet committed to Postgres.",
            value=outbox,
        )
        yield GaugeMetricFamily(
            "ftl_flush_recent_lag_seconds",
            f"Worst tick-to-commit lag over the last {RECENT_LAG_SAMPLES} flusher batches.",
            value=max((int(ms) for ms in lag_ms), default=0) / 1000,
        )
        yield GaugeMetricFamily(
            "ftl_margin_outbox_entries",
            "Margin events waiting to become margin_events rows.",
            value=margin_outbox,
        )


def _breaker_figures(breaker: Breaker) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "ftl_sportmonks_breaker_state",
        "1 for the Sportmonks circuit breaker's current state (closed, open, probing).",
        labels=["state"],
    )
    for each in BreakerState:
        state.add_metric([each.value], 1 if breaker.state is each else 0)
    yield state
    yield GaugeMetricFamily(
        "ftl_sportmonks_breaker_failures",
        "Consecutive Sportmonks failures counted by the breaker.",
        value=breaker.failures,
    )


def metrics_registry(multiproc_dir: str, client: redis.Redis, namespace: str) -> CollectorRegistry:
    registry = metrics.registry_of(multiproc_dir)
    registry.register(SharedStateCollector(client, namespace))
    return registry


def serve_metrics() -> int:
    """The exposition process Dramatiq forks beside its workers: GET /metrics."""
    from workers.broker import NAMESPACE

    settings = get_settings()
    client = hotstore.connect_blocking(settings, socket_timeout=METRICS_REDIS_TIMEOUT_S)
    registry = metrics_registry(settings.prometheus_multiproc_dir, client, NAMESPACE)
    token = settings.metrics_token

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            if not metrics.scrape_allowed(self.headers.get("Authorization"), token):
                self.send_error(401)
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    server = ThreadingHTTPServer((settings.metrics_host, settings.metrics_port), Handler)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    server.serve_forever()
    return 0
