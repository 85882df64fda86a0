"""Chaos (issue #21): Redis under Sentinel loses its primary to SIGKILL while traders trade over
HTTP. The sentinels promote the replica; every client follows without a restart; trades that
come meanwhile are refused with 503 and Retry-After, never a 500; once the killed node is back
as the new primary's replica, trading resumes; and every acknowledged trade is in `ftl audit`
and in Postgres (each was on the replica before it was answered: REDIS_WAIT_REPLICAS=1).

Prints one JSON line (and records it as the test's properties): the failover time (kill to
the sentinels naming the new primary), when the restarted node had synced as the new primary's
replica, when trades were acknowledged again, and the trades refused meanwhile.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.crash_stack import (
    REPLICATED,
    Load,
    PrivatePostgres,
    SentinelRedis,
    Stack,
    pg_bindir,
    settle_and_audit_load,
    start_trading,
    wait_until,
)

pytestmark = pytest.mark.e2e

FAILOVER_WAIT_S = 30
ACKNOWLEDGED_AFTER = 10  # trades acknowledged after the failover before the audit


@pytest.fixture
def sentinel_stack() -> Iterator[tuple[Stack, SentinelRedis]]:
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("no initdb/pg_ctl (or postgres user): the chaos test owns its PostgreSQL")
    pg = PrivatePostgres(bindir)
    hot: SentinelRedis | None = None
    stack: Stack | None = None
    try:
        hot = SentinelRedis()
        env = {
            **os.environ,
            **hot.env,
            "DATABASE_URL": pg.url,
            "SPORTMONKS_BASE_URL": "http://127.0.0.1:9/v3/football",  # NOTE: no feed: no poller
            "WEB_CONCURRENCY": "2",
        }
        stack = Stack(pg, hot.nodes[0], env)  # NOTE: the processes find Redis by the sentinels
        env.update(WEB_PORT=str(stack.web_port), WS_PORT=str(stack.ws_port))
        for step in (("migrate",), ("seed",)):
            done = stack.ftl(*step)
            assert done.returncode == 0, done.stderr
        # NOTE: the clock sends the flush runs (Dramatiq broker), the flusher moves trades to
        # Postgres: both must follow the failover for the audit to find every trade.
        for name in ("web", "flusher", "clock"):
            stack.start(name)
        yield stack, hot
    finally:
        if stack is not None:
            stack.stop_all()
        if hot is not None:
            hot.destroy()
        pg.destroy()


def test_primary_killed_under_load_fails_over_and_loses_no_acknowledged_trade(
    sentinel_stack: tuple[Stack, SentinelRedis],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    stack, hot = sentinel_stack
    load, _, _ = start_trading(stack)
    try:
        primary = hot.primary()
        assert primary is not None
        killed = hot.node_at(primary)
        refused_before = load.refused

        killed.kill()
        killed_at = time.monotonic()
        wait_until(
            lambda: hot.primary() not in (None, primary),
            "the sentinels to promote the replica",
            FAILOVER_WAIT_S,
        )
        failover_s = time.monotonic() - killed_at
        promoted = hot.primary()
        assert promoted is not None

        # The operator's (or supervisor's) part: the dead node comes back as a replica; until
        # then the lone new primary refuses writes (min-replicas-to-write).
        killed.options = [*REPLICATED, "--replicaof", *hot.node_at(promoted).address]
        killed.start()
        wait_until(
            lambda: hot.replicas_of(hot.node_at(promoted)) == 1,
            "the restarted node to sync",
            FAILOVER_WAIT_S,
        )
        replica_back_s = time.monotonic() - killed_at
        acknowledged = _acknowledged(load)
        wait_until(
            lambda: _acknowledged(load) > acknowledged,
            "a trade acknowledged by the new primary",
            FAILOVER_WAIT_S,
        )
        resumed_s = time.monotonic() - killed_at
        wait_until(
            lambda: _acknowledged(load) >= acknowledged + ACKNOWLEDGED_AFTER,
            "trading to go on",
            FAILOVER_WAIT_S,
        )

        report = {
            "failover_s": round(failover_s, 2),
            "replica_back_s": round(replica_back_s, 2),
            "trades_acknowledged_again_s": round(resumed_s, 2),
            "refused_503_retry_after": load.refused - refused_before,
            "statuses": load.statuses,
        }
        print(json.dumps(report))
        for name, value in report.items():
            record_property(name, value)

        assert 500 not in load.statuses
        failures = sum(count for status, count in load.statuses.items() if status >= 500)
        assert failures == load.refused  # every one a 503 with Retry-After
        assert load.refused > refused_before  # the clients did notice
        settle_and_audit_load(stack, load, tmp_path)
    finally:
        load.stop()


def _acknowledged(load: Load) -> int:
    return len(load.acknowledged)
