"""Prometheus figures the product code records, and how a process exposes them.

`web` (gunicorn) and the Dramatiq processes run several Python processes each, so they run
prometheus_client in multiprocess mode: their launcher (`ftl web`, `python -m workers`) points
PROMETHEUS_MULTIPROC_DIR at a directory of its own, emptied at start, before anything imports
prometheus_client; every process writes its figures there and /metrics merges them
(docs/decisions/0060). Without that variable (tests, `ftl ws`) figures stay in the process.

PERF: label children are looked up once and cached (`functools.cache`), so recording a figure
on the trade path costs one dict hit and one observation, no label validation.
"""

from __future__ import annotations

import hmac
from functools import cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess

LUA_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
LAG_BUCKETS_S = (0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELAY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

LUA_CALL_SECONDS = Histogram(
    "ftl_lua_call_seconds",
    "Round trip of one call (EVALSHA or FCALL) of a lua/ script, by script.",
    ["script"],
    buckets=LUA_BUCKETS_S,
)
TRADE_OUTCOMES = Counter(
    "ftl_trade_outcomes",
    "Trade requests that reached the engine, by action (open, close, modify) and outcome"
    " (ok, replayed, or the error code).",
    ["action", "outcome"],
)
FLUSH_LAG_SECONDS = Histogram(
    "ftl_flush_lag_seconds",
    "Worst tick-to-Postgres-commit lag of each flusher batch that carried ticks.",
    buckets=LAG_BUCKETS_S,
)
WASHOUT_DELAY_SECONDS = Histogram(
    "ftl_margin_washout_delay_seconds",
    "From the breach tick to the commit of its washout (SPEC §8: under 3 s).",
    buckets=DELAY_BUCKETS_S,
)
SPORTMONKS_SKIPPED = Counter(
    "ftl_sportmonks_skipped",
    "Items of Sportmonks bodies skipped as unreadable (the rest of the body is used), by reason.",
    ["reason"],
)
SPORTMONKS_REMAINING = Gauge(
    "ftl_sportmonks_rate_limit_remaining",
    "Calls left on the Sportmonks `fixture` entity this hour, as the last answer said (0 after a"
    " 429 until the reset).",
    multiprocess_mode="mostrecent",
)


@cache
def lua_call(script: str) -> Histogram:
    return LUA_CALL_SECONDS.labels(script)


@cache
def trade_outcome(action: str, outcome: str) -> Counter:
    return TRADE_OUTCOMES.labels(action, outcome)


@cache
def sportmonks_skipped(reason: str) -> Counter:
    return SPORTMONKS_SKIPPED.labels(reason)


def registry_of(multiproc_dir: str) -> CollectorRegistry:
    """What /metrics renders: every process's files in multiprocess mode, else this process."""
    if not multiproc_dir:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
    return registry


def mark_process_dead(multiproc_dir: str, pid: int) -> None:
    """Drop a dead process's live gauges (its counters and histograms still count)."""
    multiprocess.mark_process_dead(pid, multiproc_dir)  # type: ignore[no-untyped-call]


def scrape_allowed(authorization: str | None, metrics_token: str) -> bool:
    """Whether a /metrics request may read the figures: always when no METRICS_TOKEN is set
    (development), else only with `Authorization: Bearer <METRICS_TOKEN>` (SPEC §3.3).

    APPSEC: compared in constant time, so the token cannot be guessed a byte at a time."""
    if not metrics_token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), metrics_token.encode()
    )
