"""No partial writes (issue 16): a Lua script checks every key it will touch before its first
write, so a refusal or an error leaves Redis exactly as it was. Each test drives one script's
failure paths and compares every key of the database, byte for byte (DUMP), before and after.

Scripts with no failure path after a write are not here: the read-only ones (ping, audit_read,
margin_boxes, margin_snapshot) and those whose one write comes after every read (lease_hold,
lease_release, refresh_rotate, otp_attempt)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
import redis
from redis.exceptions import ResponseError

from ftl.core.config import Settings
from ftl.core.errors import FtlError
from ftl.market import prices, rules
from ftl.ops.flush import Flusher
from ftl.store import keys
from ftl.store.services import Services
from ftl.store.ticks import TickSource
from tests.integration.fills_helpers import Trader, full_time
from tests.integration.trading_helpers import make_instrument, make_user


@pytest.fixture
def raw(settings: Settings) -> Iterator[redis.Redis]:
    """A client that reads values as bytes (DUMP is binary)."""
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


def everything(raw: redis.Redis) -> dict[bytes, bytes | None]:
    """Every key of the database and its serialized value."""
    return {key: raw.dump(key) for key in sorted(raw.scan_iter(count=1_000))}


async def trader_with_position(
    services: Services, pg: psycopg.Connection, **levels: int
) -> tuple[Trader, dict[str, Any]]:
    instrument = await make_instrument(services, pg, live_base_cents=10_000)
    me = Trader(services, make_user(pg), instrument)
    opened = await me.open(rules.LONG, 200, levels.get("stop_loss"), levels.get("take_profit"))
    assert opened is not None
    return me, opened


async def a_holding_that_cannot_be_valued(services: Services, user: UUID) -> None:
    """Exposure on an instrument Redis holds neither a price nor a hash of (lost state)."""
    await services.redis.hset(keys.exposure(user), str(uuid.uuid4()), "100")


async def test_price_update_leaves_a_level_whose_wallet_is_gone_and_refuses_a_broken_hash(
    services: Services, pg_admin: psycopg.Connection, raw: redis.Redis
) -> None:
    me, opened = await trader_with_position(services, pg_admin, stop_loss=9_500)
    user = me.caller.user_id
    await services.redis.delete(keys.wallet(user))
    untouched = [keys.position(opened["id"]), keys.stops_below(me.instrument), keys.exposure(user)]
    before = {key: raw.dump(key) for key in untouched}

    tick = await prices.apply_base_price(services, me.instrument, 9_000, TickSource.LIVE)

    assert tick.price_cents <= 9_500, "the tick reached the stop"
    assert {key: raw.dump(key) for key in untouched} == before
    assert not await services.redis.exists(keys.wallet(user))

    broken = uuid.uuid4()
    await services.redis.hset(keys.instrument(broken), "degraded", "1")
    state = everything(raw)
    with pytest.raises(FtlError) as refused:
        await prices.apply_base_price(services, broken, 9_000, TickSource.LIVE)
    assert refused.value.code == "not_found"
    assert everything(raw) == state


async def test_a_system_close_with_one_wallet_missing_writes_nothing(
    services: Services, pg_admin: psycopg.Connection, raw: redis.Redis
) -> None:
    first, kept = await trader_with_position(services, pg_admin)
    second = Trader(services, make_user(pg_admin), first.instrument)
    lost = await second.open(rules.SHORT, 100)
    assert lost is not None
    await services.redis.delete(keys.wallet(second.caller.user_id))
    plan = {"closes": [{"p": kept["id"], "x": 10_000}, {"p": lost["id"], "x": 10_000}]}
    state = everything(raw)

    reply = await services.scripts.call(
        "position_system_close", keys=["lease:fulltime:x"], args=["auto_exit_ft", json.dumps(plan)]
    )

    assert reply[:2] == [0, "wallet_missing"]
    assert json.loads(reply[2]) == {"userId": str(second.caller.user_id)}
    assert everything(raw) == state, "the first close, valid on its own, was not written either"


async def test_a_referral_payout_failing_after_the_credit_would_have_been_writes_nothing(
    services: Services, pg_admin: psycopg.Connection, raw: redis.Redis
) -> None:
    referrer, _ = await trader_with_position(services, pg_admin)
    user = referrer.caller.user_id
    await a_holding_that_cannot_be_valued(services, user)
    referral = uuid.uuid4()
    state = everything(raw)

    with pytest.raises(ResponseError):
        await services.scripts.call(
            "referral_pay",
            keys=[keys.wallet(user), keys.referral_paid(referral)],
            args=[str(user), str(referral)],
        )

    assert everything(raw) == state


@pytest.mark.parametrize("action", ["open", "close"])
async def test_a_trade_whose_holdings_cannot_be_valued_writes_nothing(
    services: Services, pg_admin: psycopg.Connection, raw: redis.Redis, action: str
) -> None:
    me, opened = await trader_with_position(services, pg_admin)
    await a_holding_that_cannot_be_valued(services, me.caller.user_id)
    state = everything(raw)

    with pytest.raises(ResponseError):
        if action == "open":
            await me.open(rules.LONG, 100)
        else:
            await me.close(opened["id"])

    assert everything(raw) == state


async def test_a_level_change_on_an_instrument_gone_from_hot_state_writes_nothing(
    services: Services, pg_admin: psycopg.Connection, raw: redis.Redis
) -> None:
    me, opened = await trader_with_position(services, pg_admin)
    await services.redis.delete(keys.instrument(me.instrument))
    state = everything(raw)

    assert not await me.set_levels(opened["id"], 9_000, None)

    assert everything(raw) == state


async def test_a_wallet_load_with_a_malformed_position_row_writes_nothing(
    services: Services, raw: redis.Redis
) -> None:
    user = uuid.uuid4()
    good = {
        "id": str(uuid.uuid4()),
        "fields": {
            "instrumentId": str(uuid.uuid4()),
            "direction": "1",
            "lotsCentis": "100",
            "entryCents": "10000",
            "status": "open",
        },
    }
    bad = {"id": str(uuid.uuid4()), "fields": {"instrumentId": str(uuid.uuid4())}}
    state = everything(raw)

    with pytest.raises(ResponseError, match="malformed position row"):
        await services.scripts.call(
            "wallet_load",
            keys=[
                keys.wallet(user),
                keys.open_positions(user),
                keys.exposure(user),
                keys.held(user),
            ],
            args=[str(user), json.dumps({"balanceCents": "1000000"}), json.dumps([good, bad])],
        )

    assert everything(raw) == state


async def test_hashes_replace_with_a_bad_row_writes_nothing(
    services: Services, raw: redis.Redis
) -> None:
    await services.redis.hset("margin:watermark:a", "v", "1")
    state = everything(raw)

    with pytest.raises(ResponseError):
        await services.scripts.call(
            "hashes_replace",
            args=[json.dumps([["margin:watermark:a", "v", "2"], ["margin:watermark:b", "v"]])],
        )

    assert everything(raw) == state


async def test_wallets_restore_with_a_bad_row_writes_nothing(
    services: Services, raw: redis.Redis
) -> None:
    user = str(uuid.uuid4())
    await services.redis.hset(keys.wallet(user), "balanceCents", "5")
    good: list[Any] = [user, "1000000", *([None] * 9), [], []]
    bad: list[Any] = [str(uuid.uuid4()), "1000000", *([None] * 9), ["only-an-instrument"], []]
    state = everything(raw)

    with pytest.raises(ResponseError, match="malformed wallet row"):
        await services.scripts.call("wallets_restore", args=[json.dumps([good, bad]), "{}"])

    assert everything(raw) == state


async def test_set_degraded_skips_a_broken_hash_before_writing_anything_to_it(
    services: Services, pg_admin: psycopg.Connection, raw: redis.Redis
) -> None:
    healthy = await make_instrument(services, pg_admin)
    broken = uuid.uuid4()
    await services.redis.hset(keys.instrument(broken), "id", str(broken))
    before = raw.dump(keys.instrument(broken))

    changed = await services.scripts.call(
        "set_degraded", keys=[keys.instrument(broken), keys.instrument(healthy)], args=["1"]
    )

    assert changed == 1
    assert raw.dump(keys.instrument(broken)) == before
    assert await services.redis.hget(keys.instrument(healthy), "degraded") == "1"


async def test_a_rate_limit_with_a_broken_counter_counts_nothing(
    services: Services, raw: redis.Redis
) -> None:
    """One request counts against every limit or none: a later counter that is not a count is
    found before the first INCR."""
    counted, broken = keys.rate_limit("ip", "1.2.3.4"), keys.rate_limit("route", "1.2.3.4")
    await services.redis.set(counted, "3")
    await services.redis.hset(broken, "x", "1")
    for bad in ("a hash", "not a count"):
        if bad == "not a count":
            await services.redis.delete(broken)
            await services.redis.set(broken, "many")
        state = everything(raw)
        with pytest.raises(ResponseError):
            await services.scripts.call(
                "rate_limit", keys=[counted, broken], args=[60_000, 200, 10]
            )
        assert everything(raw) == state


async def test_full_time_loads_a_wallet_redis_lost_and_closes_every_position_once(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """The close-out's refused batch (wallet_missing, nothing written) runs again once the
    wallet is back in hot state."""
    kept, first = await trader_with_position(services, pg_admin)
    lost = Trader(services, make_user(pg_admin), kept.instrument)
    second = await lost.open(rules.SHORT, 100)
    assert second is not None
    await Flusher(services, consumer="test").flush()
    await services.redis.delete(keys.wallet(lost.caller.user_id))

    await full_time(services, pg_admin)

    for trader, position in ((kept, first), (lost, second)):
        assert (await trader.position(position["id"]))["closedBy"] == "auto_exit_ft"
        assert await trader.open_ids() == set()
