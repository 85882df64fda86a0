"""Prometheus figures of one `ws` process, served as text at GET /metrics on its own port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
FRAME_KINDS = ("price", "portfolio", "reply")
EVICTION_REASONS = ("slow_consumer", "bad_messages", "rate_limited")
CYCLE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
TICK_AGE_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0)


class WsMetrics:
    """One registry per server, so several servers in one test process never share figures."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.connections = Gauge(
            "ftl_ws_connections", "Open WebSocket connections.", registry=registry
        )
        self.subscriptions = Gauge(
            "ftl_ws_subscriptions",
            "Instrument subscriptions held by open connections.",
            registry=registry,
        )
        frames = Counter(
            "ftl_ws_frames_sent", "Frames written to clients.", ["kind"], registry=registry
        )
        self.frames_sent = {kind: frames.labels(kind) for kind in FRAME_KINDS}
        self.bytes_sent = Counter(
            "ftl_ws_bytes_sent", "Payload bytes written to clients.", registry=registry
        )
        evictions = Counter(
            "ftl_ws_evictions", "Connections closed by the server.", ["reason"], registry=registry
        )
        self.evictions = {reason: evictions.labels(reason) for reason in EVICTION_REASONS}
        self.rejections = Counter(
            "ftl_ws_handshake_rejections",
            "Upgrade requests refused before the handshake.",
            ["code"],
            registry=registry,
        )
        self.ticks_received = Counter(
            "ftl_ws_ticks_received", "Ticks read from Redis pub/sub.", registry=registry
        )
        self.fan_out_cycle = Histogram(
            "ftl_ws_fan_out_cycle_seconds",
            "Time to turn one cycle's ticks into every subscriber's frame.",
            buckets=CYCLE_BUCKETS_S,
            registry=registry,
        )

        self.tick_age = Histogram(
            "ftl_ws_tick_age_seconds",
            "Age of a tick (since its `t`) when the fan-out cycle that carried it had written"
            " every subscriber's frame.",
            buckets=TICK_AGE_BUCKETS_S,
            registry=registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
