"""Synthetic traders (`ftl bots`) against the real API over the seeded market: they move netLots
and prices with ordinary trades, and take refusals, lost answers and expired tokens in stride."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from uuid import UUID

import httpx
import pytest
from falcon import testing

from ftl.core.config import Settings
from ftl.market import instruments
from ftl.ops.bots import BotReport, Traders
from ftl.store import keys
from ftl.store.services import Services
from web.app import create_app

BASE_URL = "http://bots.test"


class LoseAnswers(httpx.AsyncBaseTransport):
    """Forwards every request but drops the answer of the first `count` to `path`, as a network
    that fails after the server acted would."""

    def __init__(self, inner: httpx.AsyncBaseTransport, path: str, count: int = 1) -> None:
        self.inner = inner
        self.path = path
        self.count = count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        reply = await self.inner.handle_async_request(request)
        if request.url.path == self.path and self.count:
            self.count -= 1
            await reply.aread()
            raise httpx.ReadError("connection lost before the answer", request=request)
        return reply


@pytest.fixture
async def app_transport(
    settings: Settings, market: Services
) -> AsyncIterator[httpx.AsyncBaseTransport]:
    """The ASGI app (lifespan run by falcon's conductor) as an httpx transport."""
    app = create_app(settings)
    async with testing.ASGIConductor(app):
        yield httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # falcon's looser hints


def traders(transport: httpx.AsyncBaseTransport, count: int, seed: int = 7) -> Traders:
    client = httpx.AsyncClient(transport=transport, base_url=BASE_URL)
    return Traders(client, count, rng=random.Random(seed))


async def net_lots_of_bots(bots: Traders) -> Counter[str]:
    """Σ signed lots of the bots' open positions per instrument, as their portfolios say."""
    net: Counter[str] = Counter()
    for bot in bots.bots:
        reply = await bots.client.get(
            "/api/portfolio", headers={"Authorization": f"Bearer {bot.token}"}
        )
        for p in reply.json()["positions"]:
            sign = 1 if p["direction"] == "long" else -1
            net[p["instrumentId"]] += sign * int(Decimal(str(p["lotSize"])) * 100)
        assert sorted(p["id"] for p in reply.json()["positions"]) == sorted(bot.positions)
    return net


async def test_bots_move_net_lots_and_prices_with_trade_ticks(
    app_transport: httpx.AsyncBaseTransport, market: Services
) -> None:
    bots = traders(app_transport, 5)
    report = await bots.run(rate_per_s=10_000, turns=40)
    assert report.opened > 0 and report.closed > 0
    assert report.failures == 0 and not report.refused, report.summary()
    assert all(len(bot.positions) <= 3 for bot in bots.bots)

    held = await net_lots_of_bots(bots)
    assert any(held.values()), "the bots end the run holding positions"
    listed = (await bots.client.get("/api/instruments")).json()["instruments"]
    for instrument in listed:
        assert int(Decimal(str(instrument["netLots"])) * 100) == held[instrument["id"]]
        state = await instruments.read(market.redis, UUID(instrument["id"]))
        assert state is not None
        if held[instrument["id"]]:
            assert instrument["price"] != instrument["liveBasePrice"]
            assert state.seq > 0, "every trade emits a tick"
    ticks = await market.redis.zrange(keys.tick_log(UUID(next(iter(held)))), 0, -1)
    assert ticks and all('"s":1' in t for t in ticks), "bot trades are ordinary trade ticks"
    await bots.client.aclose()


async def test_bots_count_refusals_and_drop_positions_the_system_closed(
    app_transport: httpx.AsyncBaseTransport, market: Services
) -> None:
    bots = traders(app_transport, 1)
    await bots.sign_in()
    await bots.read_market()
    [bot] = bots.bots
    first, second = bots.market[0], bots.market[1]

    await bots.open(bot, first)
    [position_id] = bot.positions
    # Closed behind the bot's back, as full time or a washout would.
    closed = await bots.client.delete(
        f"/api/positions/{position_id}",
        params={"clientRequestId": "by-hand"},
        headers={"Authorization": f"Bearer {bot.token}"},
    )
    assert closed.status_code == 200
    await bots.close(bot, position_id)
    assert bot.positions == []

    await market.redis.hset(keys.instrument(second["id"]), "frozen", "1")
    await bots.open(bot, second)
    assert bot.positions == []
    assert bots.report.refused == Counter({"position_closed": 1, "instrument_frozen": 1})
    await bots.read_market()
    assert second["id"] not in {i["id"] for i in bots.market}, "a frozen instrument is skipped"
    assert bots.report == BotReport(opened=1, refused=bots.report.refused)
    await bots.client.aclose()


async def test_a_lost_answer_is_retried_once_without_trading_twice(
    app_transport: httpx.AsyncBaseTransport, market: Services
) -> None:
    bots = traders(LoseAnswers(app_transport, "/api/positions/open"), 1)
    await bots.sign_in()
    await bots.read_market()
    [bot] = bots.bots
    await bots.open(bot, bots.market[0])
    assert len(bot.positions) == 1
    assert (bots.report.opened, bots.report.replayed, bots.report.failures) == (1, 1, 1)
    state = await instruments.read(market.redis, UUID(bots.market[0]["id"]))
    assert state is not None and state.seq == 1, "one trade, one tick"
    await bots.client.aclose()


async def test_a_bot_whose_token_is_refused_signs_in_again(
    app_transport: httpx.AsyncBaseTransport,
) -> None:
    bots = traders(app_transport, 2)
    await bots.sign_in()
    await bots.read_market()
    users = [b.user_id for b in bots.bots]
    stale = bots.bots[0]
    stale.token = "not-a-token"
    await bots.open(stale, bots.market[0])
    assert len(stale.positions) == 1 and stale.token != "not-a-token"
    assert [b.user_id for b in bots.bots] == users, "the same bots, with fresh tokens"
    assert not bots.report.refused
    await bots.client.aclose()
