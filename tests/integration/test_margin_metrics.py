"""`ftl_margin_washout_delay_seconds` records each washout's delay, from its breach tick to its
commit, and the alert docs/operations.md gives on it fires when washouts come late."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from uuid import UUID

import psycopg

from ftl.core import metrics
from ftl.store import keys
from ftl.store.services import Services
from ftl.store.ticks import Tick
from tests.integration.margin_helpers import evaluate, move
from tests.integration.test_margin import one_position_at_risk

OPERATIONS_MD = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
# The documented alert, as Prometheus evaluates it: the quantile of the buckets' increase.
ALERT = re.compile(
    r"histogram_quantile\((?P<q>0\.\d+), sum by \(le\) \(rate\("
    r"ftl_margin_washout_delay_seconds_bucket\[5m\]\)\)\) > (?P<threshold>\d+(?:\.\d+)?)"
)
LATE_MS = 20_000  # how late the evaluator comes to the breach in the late case


def buckets() -> dict[float, float]:
    """The histogram's cumulative bucket counts in this process, by upper bound."""
    (family,) = metrics.WASHOUT_DELAY_SECONDS.collect()
    return {float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")}


def observed() -> tuple[float, float]:
    (family,) = metrics.WASHOUT_DELAY_SECONDS.collect()
    values = {s.name: s.value for s in family.samples}
    return (
        values["ftl_margin_washout_delay_seconds_count"],
        values["ftl_margin_washout_delay_seconds_sum"],
    )


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float:
    """Prometheus's histogram_quantile over cumulative bucket counts (linear inside a bucket;
    the highest finite bound when the rank falls in +Inf)."""
    bounds = sorted(cumulative)
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = cumulative[upper]
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    raise AssertionError("the +Inf bucket holds every observation")


async def breach_at_ms(services: Services, instrument: UUID, seq: int) -> int:
    logged: list[str] = await services.redis.zrangebyscore(keys.tick_log(instrument), seq, seq)  # type: ignore[assignment]
    (raw,) = logged
    return Tick.from_json(raw).at_ms


async def made_earlier(services: Services, instrument: UUID, by_ms: int) -> None:
    """Every logged tick of the instrument made `by_ms` earlier: the state an evaluator finds
    when it comes that late (a backlog), without waiting for it."""
    name = keys.tick_log(instrument)
    logged: list[str] = await services.redis.zrange(name, 0, -1)  # type: ignore[assignment]
    ticks = [Tick.from_json(raw) for raw in logged]
    async with services.redis.pipeline(transaction=True) as pipe:
        pipe.delete(name)
        for tick in ticks:
            earlier = replace(tick, at_ms=tick.at_ms - by_ms)
            pipe.zadd(name, {earlier.to_json(): tick.seq})
        await pipe.execute()


async def test_a_washout_records_the_time_from_its_breach_tick_to_its_commit(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user, instrument, _ = await one_position_at_risk(services, pg_admin)
    breach = await move(services, instrument, 9_000)  # 50 %: a breach
    at_ms = await breach_at_ms(services, instrument, breach)
    count, total = observed()

    started_ms = time.time() * 1000
    outcome = await evaluate(services, user)
    finished_ms = time.time() * 1000

    assert outcome.closed == 1
    new_count, new_total = observed()
    assert new_count == count + 1
    # The commit happened between the two readings of the clock, so its delay lies between.
    assert (started_ms - at_ms) / 1000 <= new_total - total <= (finished_ms - at_ms) / 1000


async def test_late_washouts_fire_the_documented_alert(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    found = ALERT.search(" ".join(OPERATIONS_MD.read_text(encoding="utf-8").split()))
    assert found is not None, "docs/operations.md states the washout-delay alert"
    quantile, threshold = float(found["q"]), float(found["threshold"])
    user, instrument, _ = await one_position_at_risk(services, pg_admin)
    await move(services, instrument, 9_000)
    await made_earlier(services, instrument, LATE_MS)
    before = buckets()

    assert (await evaluate(services, user)).closed == 1

    increase = {le: count - before[le] for le, count in buckets().items()}
    assert histogram_quantile(quantile, increase) > threshold
