"""`ftl seed` loads a playable demo market into Postgres and Redis, and is idempotent."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ftl.market import instruments
from ftl.ops.seed import DISTRICTS, load_demo_data, seed
from ftl.store import keys
from ftl.store.db.models import District, FeatureFlag, Fixture, Instrument, User, UserRole, Wallet
from ftl.store.services import Services

ADMIN = "admin@ftl.test"


async def count(services: Services, model: type) -> int:
    async with AsyncSession(services.engine) as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_seed_loads_districts_squads_fixtures_flags_and_an_admin(services: Services) -> None:
    report = await seed(services.engine, services.redis, admin_email=ADMIN)
    players = sum(len(team["players"]) for team in load_demo_data()["teams"])

    assert report.instruments == report.new_instruments == report.loaded_into_redis == players
    assert await count(services, District) == 14
    assert await count(services, Instrument) == players
    assert await count(services, Fixture) == len(load_demo_data()["fixtures"])
    assert await count(services, FeatureFlag) >= 2
    async with AsyncSession(services.engine) as session:
        names = (await session.scalars(select(District.name).order_by(District.id))).all()
        admins = (await session.scalars(select(User).where(User.role == UserRole.admin))).all()
        idxs = (await session.scalars(select(Instrument.idx).order_by(Instrument.idx))).all()
        wallet = await session.get(Wallet, admins[0].id)
    assert tuple(names) == DISTRICTS
    assert [a.email for a in admins] == [ADMIN]
    assert wallet is not None and wallet.balance == Decimal("10000.00")
    assert list(idxs) == list(range(1, players + 1)), "idx must be dense from 1"


async def test_seed_puts_every_instrument_into_hot_state(services: Services) -> None:
    await seed(services.engine, services.redis, admin_email=ADMIN)
    async with AsyncSession(services.engine) as session:
        rows = (await session.scalars(select(Instrument))).all()
    idx_map = await services.redis.hgetall(keys.INSTRUMENT_IDX)
    assert idx_map == {str(row.idx): str(row.id) for row in rows}
    messi = next(row for row in rows if row.name == "Lionel Messi")
    hot = await instruments.read(services.redis, messi.id)
    assert hot is not None
    assert hot.idx == messi.idx
    assert hot.base_price_cents == hot.live_base_price_cents == int(messi.base_price * 100)
    assert hot.k_mod_micros == 50_000, "default kMod is 0.05 points per lot"
    assert (hot.net_lots_centis, hot.seq, hot.is_active, hot.frozen) == (0, 0, True, False)


async def test_seed_twice_changes_nothing_and_keeps_hot_state(services: Services) -> None:
    await seed(services.engine, services.redis, admin_email=ADMIN)
    some_id = str(await services.redis.hget(keys.INSTRUMENT_IDX, "5"))
    # Hot state moved on (trades, ticks) after the first seed: a reseed must not roll it back.
    await services.redis.hset(keys.instrument(some_id), mapping={"netLotsCentis": 250, "seq": 9})
    before = {
        model: await count(services, model)
        for model in (District, Instrument, Fixture, User, Wallet)
    }

    again = await seed(services.engine, services.redis, admin_email=ADMIN)

    assert (again.new_instruments, again.loaded_into_redis) == (0, 0)
    assert {model: await count(services, model) for model in before} == before
    hot = await services.redis.hmget(keys.instrument(some_id), ["netLotsCentis", "seq"])
    assert hot == ["250", "9"]


async def test_seed_after_redis_loss_reloads_hot_state(services: Services) -> None:
    await seed(services.engine, services.redis, admin_email=ADMIN)
    await services.redis.flushdb()
    report = await seed(services.engine, services.redis, admin_email=ADMIN)
    assert report.new_instruments == 0
    assert report.loaded_into_redis == report.instruments
    assert await services.redis.hlen(keys.INSTRUMENT_IDX) == report.instruments
