"""The trading routes of SPEC §3.2 over HTTP: shapes, idempotency, and every 4xx of §3 for
trading, each leaving Redis and Postgres exactly as they were."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
import redis
from falcon import testing

from ftl.core.config import Settings
from ftl.core.errors import NotReplicated
from ftl.market import leaderboard, prices
from ftl.ops.flush import Flusher
from ftl.store import keys
from ftl.store.auth.tokens import TokenType
from ftl.store.scripts import Scripts
from ftl.store.services import Services
from ftl.store.ticks import TickSource
from ftl.trading import trades, wallets
from ftl.trading.trades import Caller, OpenOrder
from tests.conftest import TABLES
from tests.integration.trading_helpers import access_token, make_instrument, make_user
from web.app import create_app

POSITION_FIELDS = {
    "id",
    "instrumentId",
    "idx",
    "direction",
    "lotSize",
    "entryPrice",
    "margin",
    "stopLoss",
    "takeProfit",
    "openedAt",
    "status",
    "exitPrice",
    "realizedPnl",
    "closedAt",
    "closedBy",
}
WALLET_FIELDS = {"balance", "usedMargin", "equity", "freeMargin", "marginLevel"}


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[testing.ASGIConductor]:
    async with testing.ASGIConductor(create_app(settings)) as conductor:
        yield conductor


@pytest.fixture
def raw_redis(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


class Trader:
    def __init__(self, client: testing.ASGIConductor, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    async def open(self, body: dict[str, Any] | str) -> testing.Result:
        text = body if isinstance(body, str) else json.dumps(body)
        return await self.client.simulate_post(
            "/api/positions/open",
            body=text,
            headers={**self.headers, "Content-Type": "application/json"},
        )

    async def close(self, position_id: str, request_id: str | None = "c1") -> testing.Result:
        params = {} if request_id is None else {"clientRequestId": request_id}
        return await self.client.simulate_delete(
            f"/api/positions/{position_id}", params=params, headers=self.headers
        )

    async def patch(self, position_id: str, body: dict[str, Any]) -> testing.Result:
        return await self.client.simulate_patch(
            f"/api/positions/{position_id}",
            body=json.dumps(body),
            headers={**self.headers, "Content-Type": "application/json"},
        )

    async def get(self, path: str, **params: str) -> testing.Result:
        return await self.client.simulate_get(path, params=params, headers=self.headers)


@pytest.fixture
async def world(
    client: testing.ASGIConductor, services: Services, pg_admin: psycopg.Connection
) -> dict[str, Any]:
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000)
    alice, bob = make_user(pg_admin), make_user(pg_admin, district_id=7)
    # NOTE: wallets warm in hot state first: a refusal may load a cold wallet from Postgres (a
    # cache fill, not a change), which would blur "a refusal changes nothing".
    for user in (alice, bob):
        await wallets.load(services, user)
    return {
        "instrument": instrument,
        "alice": alice,
        "bob": bob,
        "as_alice": Trader(client, access_token(services, alice)[0]),
        "as_bob": Trader(client, access_token(services, bob)[0]),
    }


def open_body(instrument: UUID, request_id: str = "o1", **overrides: Any) -> dict[str, Any]:
    return {
        "instrumentId": str(instrument),
        "direction": "long",
        "lotSize": 1,
        "clientRequestId": request_id,
        "clientPrice": 100,
        **overrides,
    }


def stores(pg: psycopg.Connection, raw: redis.Redis) -> tuple[Any, ...]:
    """Everything Redis and Postgres hold, to show a refusal changed nothing."""
    hot = {key: raw.dump(key) for key in sorted(raw.keys("*"))}
    cold = {
        table: pg.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        for table in TABLES.split(", ")
    }
    return hot, cold


def assert_error(result: testing.Result, status: int, code: str) -> dict[str, Any]:
    assert result.status_code == status, result.text
    error: dict[str, Any] = result.json["error"]
    assert error["code"] == code, error
    return error


async def test_open_answers_201_with_position_wallet_and_replayed(world: dict[str, Any]) -> None:
    result = await world["as_alice"].open(open_body(world["instrument"], lotSize=2))
    assert result.status_code == 201, result.text
    body = result.json
    assert set(body) == {"position", "wallet", "replayed"}
    assert set(body["position"]) == POSITION_FIELDS
    assert set(body["wallet"]) == WALLET_FIELDS
    assert body["replayed"] is False
    position = body["position"]
    # fill = 100 + 0.05 × (0 + 2/2) = 100.05; margin = 100.05 × 2 × 100 / 10 = 2001.00
    assert (position["entryPrice"], position["margin"], position["status"]) == (
        100.05,
        2001,
        "open",
    )
    # the price after the trade is 100 + 0.05 × 2 = 100.10: unrealized (100.10 − 100.05) × 200
    assert body["wallet"] == {
        "balance": 10_000,
        "usedMargin": 2001,
        "equity": 10_010,
        "freeMargin": 8009,
        "marginLevel": 500.25,
    }


async def test_a_retried_open_is_applied_once_and_replayed(
    world: dict[str, Any], services: Services
) -> None:
    body = open_body(world["instrument"], "retry-me")
    first = await world["as_alice"].open(body)
    again = await world["as_alice"].open(body)
    assert again.status_code == 201
    assert again.json == {**first.json, "replayed": True}
    assert await services.redis.scard(keys.open_positions(world["alice"])) == 1
    assert await services.redis.hget(keys.instrument(world["instrument"]), "seq") == "1"


async def test_a_replay_writes_its_record_again_unchanged_so_its_wait_covers_the_trade(
    world: dict[str, Any], raw_redis: redis.Redis
) -> None:
    body = open_body(world["instrument"], "replay-waits")
    await world["as_alice"].open(body)
    record = keys.idempotency(world["alice"], "replay-waits")
    value, ttl_ms = raw_redis.get(record), raw_redis.pttl(record)
    raw_redis.config_set("notify-keyspace-events", "K$")
    with raw_redis.pubsub(ignore_subscribe_messages=True) as events:
        events.subscribe(
            f"__keyspace@{raw_redis.connection_pool.connection_kwargs.get('db', 0)}__:{record}"
        )
        again = await world["as_alice"].open(body)
        assert again.json["replayed"] is True
        # NOTE: a write on the trade's connection (WAIT counts only those; decision 0151)
        # NOTE: get_message answers None for the ignored subscribe confirmation too
        deadline = asyncio.get_running_loop().time() + 5
        message = None
        while message is None and asyncio.get_running_loop().time() < deadline:
            message = events.get_message(timeout=1)
        assert message is not None and message["data"] == b"set"
    raw_redis.config_set("notify-keyspace-events", "")
    assert raw_redis.get(record) == value
    assert 0 < raw_redis.pttl(record) <= ttl_ms  # the 24 hours still count from the trade


async def test_a_reused_request_id_with_another_body_is_422(
    world: dict[str, Any], pg_admin: psycopg.Connection, raw_redis: redis.Redis
) -> None:
    await world["as_alice"].open(open_body(world["instrument"], "same"))
    before = stores(pg_admin, raw_redis)
    result = await world["as_alice"].open(open_body(world["instrument"], "same", lotSize=2))
    assert_error(result, 422, "idempotency_conflict")
    assert stores(pg_admin, raw_redis) == before


async def test_two_hundred_simultaneous_opens_never_lock_more_than_the_free_margin(
    world: dict[str, Any], services: Services
) -> None:
    # margin of 5 lots at ~100 is ~5,000: two fit in 10,000.00, the rest must be refused
    results = await asyncio.gather(
        *(
            world["as_alice"].open(
                open_body(world["instrument"], f"burst{n}", lotSize=5, clientPrice=101)
            )
            for n in range(200)
        )
    )
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) == {201, 409}
    assert {r.json["error"]["code"] for r in results if r.status_code == 409} == {
        "insufficient_margin"
    }
    wallet = await services.redis.hgetall(keys.wallet(world["alice"]))
    used = int(wallet["usedMarginCents"])
    portfolio = (await world["as_alice"].get("/api/portfolio")).json
    assert 0 < used <= 1_000_000 + round(portfolio["unrealizedPnl"] * 100)
    assert portfolio["freeMargin"] >= 0
    assert statuses.count(201) == int(wallet["openCount"]) == 2


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"lotSize": 0}, "validation_error"),
        ({"lotSize": 0.001}, "validation_error"),
        ({"lotSize": 100.01}, "validation_error"),
        ({"lotSize": 1.005}, "validation_error"),
        ({"lotSize": -1}, "validation_error"),
        ({"lotSize": "1"}, "validation_error"),
        ({"lotSize": True}, "validation_error"),
        ({"lotSize": None}, "validation_error"),
        ({"lotSize": 10**400}, "validation_error"),
        ({"clientPrice": 1e300}, "validation_error"),
        ({"clientPrice": 100.001}, "validation_error"),
        ({"clientPrice": 0}, "validation_error"),
        ({"clientPrice": None}, "validation_error"),
        ({"slippageTolerancePct": 0.06}, "validation_error"),
        ({"slippageTolerancePct": -0.01}, "validation_error"),
        ({"direction": "up"}, "validation_error"),
        ({"instrumentId": "not-a-uuid"}, "validation_error"),
        ({"clientRequestId": ""}, "validation_error"),
        ({"clientRequestId": "x" * 65}, "validation_error"),
        ({"clientRequestId": 7}, "validation_error"),
        ({"stopLoss": "90"}, "validation_error"),
        ({"stopLoss": 101}, "validation_error"),  # a long's stop-loss must be below the price
        ({"takeProfit": 99}, "validation_error"),  # ... and its take-profit above it
        ({"leverage": 100}, "unknown_field"),
    ],
)
async def test_bad_open_bodies_are_400_and_change_nothing(
    world: dict[str, Any],
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
    overrides: dict[str, Any],
    code: str,
) -> None:
    before = stores(pg_admin, raw_redis)
    result = await world["as_alice"].open(open_body(world["instrument"], **overrides))
    error = assert_error(result, 400, code)
    assert error["details"]["field"] in (set(overrides) | {"lotSize", "clientPrice"})
    assert stores(pg_admin, raw_redis) == before


async def test_a_number_too_big_for_a_float_is_400(
    world: dict[str, Any], pg_admin: psycopg.Connection, raw_redis: redis.Redis
) -> None:
    before = stores(pg_admin, raw_redis)
    text = json.dumps(open_body(world["instrument"])).replace('"lotSize": 1', '"lotSize": 1e400')
    error = assert_error(await world["as_alice"].open(text), 400, "validation_error")
    assert error["details"]["field"] == "lotSize"
    assert stores(pg_admin, raw_redis) == before


@pytest.mark.parametrize(
    "text",
    [
        '{"lotSize": NaN}',
        '{"lotSize": Infinity}',
        '{"lotSize": -Infinity}',
        "not json",
        "[]",
    ],
)
async def test_malformed_json_is_400_invalid_json(
    world: dict[str, Any], pg_admin: psycopg.Connection, raw_redis: redis.Redis, text: str
) -> None:
    before = stores(pg_admin, raw_redis)
    assert_error(await world["as_alice"].open(text), 400, "invalid_json")
    assert stores(pg_admin, raw_redis) == before


async def test_domain_refusals_are_409_404_401_and_change_nothing(
    world: dict[str, Any],
    services: Services,
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
    client: testing.ASGIConductor,
) -> None:
    alice: Trader = world["as_alice"]
    frozen = await make_instrument(services, pg_admin, frozen=True)
    inactive = await make_instrument(services, pg_admin, active=False)
    opened = (await alice.open(open_body(world["instrument"], "keep"))).json["position"]
    before = stores(pg_admin, raw_redis)
    cases = [
        (alice.open(open_body(frozen, "f")), 409, "instrument_frozen"),
        (alice.open(open_body(inactive, "i")), 409, "instrument_inactive"),
        (alice.open(open_body(uuid4(), "u")), 404, "not_found"),
        (
            alice.open(open_body(world["instrument"], "m", lotSize=100, clientPrice=103)),
            409,
            "insufficient_margin",
        ),
        (alice.open(open_body(world["instrument"], "s", clientPrice=90)), 409, "slippage_exceeded"),
        (
            alice.open(open_body(world["instrument"], "s2", direction="short", clientPrice=110)),
            409,
            "slippage_exceeded",
        ),
        (world["as_bob"].close(opened["id"]), 404, "not_found"),
        (world["as_bob"].patch(opened["id"], {"stopLoss": 50}), 404, "not_found"),
        (world["as_bob"].get(f"/api/positions/{opened['id']}"), 404, "not_found"),
        (alice.close(str(uuid4())), 404, "not_found"),
        (alice.close("not-a-uuid"), 404, "not_found"),
        (alice.close(opened["id"], request_id=None), 400, "validation_error"),
        (alice.patch(opened["id"], {"stopLoss": 200}), 400, "validation_error"),
        (alice.patch(opened["id"], {"trailing": 1}), 400, "unknown_field"),
        (client.simulate_post("/api/positions/open", json=open_body(frozen)), 401, "unauthorized"),
    ]
    for call, status, code in cases:
        assert_error(await call, status, code)
    assert stores(pg_admin, raw_redis) == before


async def test_a_revoked_token_cannot_trade(
    world: dict[str, Any],
    services: Services,
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
    client: testing.ASGIConductor,
) -> None:
    token, jti = access_token(services, world["alice"])
    await services.redis.set(keys.revoked_jti(jti), "1")
    before = stores(pg_admin, raw_redis)
    assert_error(
        await Trader(client, token).open(open_body(world["instrument"])), 401, "unauthorized"
    )
    assert stores(pg_admin, raw_redis) == before


async def test_at_most_fifty_open_positions(
    world: dict[str, Any], pg_admin: psycopg.Connection, raw_redis: redis.Redis
) -> None:
    alice: Trader = world["as_alice"]
    for n in range(50):
        result = await alice.open(open_body(world["instrument"], f"n{n}", lotSize=0.01))
        assert result.status_code == 201, result.text
    before = stores(pg_admin, raw_redis)
    result = await alice.open(open_body(world["instrument"], "n50", lotSize=0.01))
    assert_error(result, 409, "too_many_positions")
    assert stores(pg_admin, raw_redis) == before


async def test_close_levels_reads_and_lists(world: dict[str, Any], services: Services) -> None:
    alice: Trader = world["as_alice"]
    opened = (await alice.open(open_body(world["instrument"], lotSize=1.5))).json["position"]
    patched = await alice.patch(opened["id"], {"stopLoss": 90, "takeProfit": 120.5})
    assert patched.status_code == 200, patched.text
    assert (patched.json["stopLoss"], patched.json["takeProfit"]) == (90, 120.5)
    cleared = await alice.patch(opened["id"], {"stopLoss": None})
    assert (cleared.json["stopLoss"], cleared.json["takeProfit"]) == (None, 120.5)
    portfolio = (await alice.get("/api/portfolio")).json
    assert [p["id"] for p in portfolio["positions"]] == [opened["id"]]
    assert portfolio["positions"][0]["price"] == 100.08  # 100 + 0.05 × 1.5, to the cent

    closed = await alice.close(opened["id"], "bye")
    assert closed.status_code == 200, closed.text
    assert closed.json["position"]["closedBy"] == "user"
    # the curve's average 100.0375 buys at 100.04 and sells at 100.03: a cent a share
    assert (opened["entryPrice"], closed.json["position"]["exitPrice"]) == (100.04, 100.03)
    assert closed.json["position"]["realizedPnl"] == -1.5
    assert closed.json["replayed"] is False
    assert (await alice.close(opened["id"], "bye")).json["replayed"] is True
    assert_error(await alice.close(opened["id"], "bye-again"), 409, "position_closed")
    assert_error(await alice.patch(opened["id"], {"stopLoss": 1}), 409, "position_closed")

    await Flusher(services, "api").flush()
    # the closed position left hot state; Postgres answers for it now
    assert not await services.redis.exists(keys.position(opened["id"]))
    assert_error(await alice.close(opened["id"], "bye-3"), 409, "position_closed")
    one = await alice.get(f"/api/positions/{opened['id']}")
    assert one.json == closed.json["position"]
    listed = await alice.get("/api/positions", status="closed")
    assert listed.json == {"positions": [closed.json["position"]], "nextCursor": None}
    trades = (await alice.get("/api/trades")).json["trades"]
    assert [(t["kind"], t["side"], t["price"]) for t in trades] == [
        ("close", "sell", closed.json["position"]["exitPrice"]),
        ("open", "buy", opened["entryPrice"]),
    ]
    history = (await alice.get(f"/api/instruments/{world['instrument']}/price-history")).json
    assert [t["seq"] for t in history["ticks"]] == [1, 2]
    instrument = (await alice.get(f"/api/instruments/{world['instrument']}")).json
    assert (instrument["price"], instrument["netLots"]) == (100, 0)
    board = (await alice.get("/api/leaderboard")).json
    assert board["entries"][0]["userId"] == str(world["alice"])
    assert board["me"] == {"rank": 1, "score": -1.5}


async def test_positions_page_newest_first_with_a_cursor(
    world: dict[str, Any], services: Services
) -> None:
    alice: Trader = world["as_alice"]
    opened = []
    for n in range(5):
        result = await alice.open(open_body(world["instrument"], f"p{n}", lotSize=0.1))
        opened.append(result.json["position"]["id"])
        # NOTE: openedAt has millisecond resolution; equal instants page by id, not by arrival.
        await asyncio.sleep(0.002)
    await Flusher(services, "pages").flush()
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await alice.get("/api/positions", **params)).json
        seen += [p["id"] for p in page["positions"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == opened[::-1]
    assert (await world["as_bob"].get("/api/positions")).json["positions"] == []
    assert_error(await alice.get("/api/positions", limit="0"), 400, "validation_error")
    assert_error(await alice.get("/api/positions", cursor="garbage"), 400, "validation_error")
    assert_error(await alice.get("/api/positions", status="maybe"), 400, "validation_error")


async def test_instruments_filter_and_price_history_bounds(
    world: dict[str, Any], services: Services
) -> None:
    alice: Trader = world["as_alice"]
    listed = (await alice.get("/api/instruments", team="bra", position="FWD")).json["instruments"]
    assert [i["id"] for i in listed] == [str(world["instrument"])]
    assert (await alice.get("/api/instruments", team="ARG")).json["instruments"] == []
    assert_error(await alice.get("/api/instruments", position="CB"), 400, "validation_error")
    assert_error(await alice.get(f"/api/instruments/{uuid4()}"), 404, "not_found")
    for n in range(3):
        await alice.open(open_body(world["instrument"], f"h{n}", lotSize=0.5))
    await Flusher(services, "history").flush()
    path = f"/api/instruments/{world['instrument']}/price-history"
    ticks = (await alice.get(path, limit="2")).json["ticks"]
    assert [t["seq"] for t in ticks] == [1, 2]
    assert ticks[1]["price"] == 100.05  # 100 + 0.05 × 1.00 lot after two opens of 0.5
    later = (await alice.get(path, since="2000-01-01T00:00:00Z")).json["ticks"]
    assert [t["seq"] for t in later] == [1, 2, 3]
    assert_error(await alice.get(path, limit="1001"), 400, "validation_error")
    assert_error(await alice.get(path, since="yesterday"), 400, "validation_error")
    assert_error(await alice.get(f"/api/instruments/{uuid4()}/price-history"), 404, "not_found")


async def test_leaderboard_ranks_equal_scores_by_arrival(
    world: dict[str, Any], services: Services
) -> None:
    for trader in ("as_bob", "as_alice"):
        opened = (await world[trader].open(open_body(world["instrument"], "x"))).json
        await world[trader].close(opened["position"]["id"], "y")
    board = (await world["as_alice"].get("/api/leaderboard")).json
    assert [e["userId"] for e in board["entries"]] == [str(world["bob"]), str(world["alice"])]
    assert [e["rank"] for e in board["entries"]] == [1, 2]
    district = (
        await world["as_bob"].get("/api/leaderboard", scope="district", districtId="7")
    ).json
    assert [e["userId"] for e in district["entries"]] == [str(world["bob"])]
    assert district["entries"][0]["districtId"] == 7
    bad = await world["as_bob"].get("/api/leaderboard", scope="district")
    assert_error(bad, 400, "validation_error")


async def test_leaderboard_snapshots_keep_the_ranks(
    world: dict[str, Any], services: Services, pg_admin: psycopg.Connection
) -> None:
    opened = {
        trader: (await world[trader].open(open_body(world["instrument"], "x"))).json["position"]
        for trader in ("as_bob", "as_alice")
    }
    await world["as_bob"].close(opened["as_bob"]["id"], "y")
    await prices.apply_base_price(services, world["instrument"], 10_500, TickSource.LIVE)
    alice_closed = (await world["as_alice"].close(opened["as_alice"]["id"], "y")).json
    assert alice_closed["position"]["realizedPnl"] > 0
    assert await leaderboard.snapshot(services) == 4  # overall: 2; districts 1 and 7: 1 each
    rows = pg_admin.execute(
        "SELECT scope, district_id, rank, user_id, score FROM leaderboard_snapshots"
        " ORDER BY scope, district_id NULLS FIRST, rank"
    ).fetchall()
    board = (await world["as_alice"].get("/api/leaderboard")).json["entries"]
    assert [(r[0], r[1], r[2], str(r[3]), float(r[4])) for r in rows] == [
        ("overall", None, 1, str(world["alice"]), alice_closed["position"]["realizedPnl"]),
        ("overall", None, 2, str(world["bob"]), board[1]["score"]),
        ("district", 1, 1, str(world["alice"]), alice_closed["position"]["realizedPnl"]),
        ("district", 7, 1, str(world["bob"]), board[1]["score"]),
    ]
    assert [e["userId"] for e in board] == [str(world["alice"]), str(world["bob"])]
    assert pg_admin.execute(
        "SELECT count(DISTINCT taken_at) FROM leaderboard_snapshots"
    ).fetchone() == (1,)


async def test_an_ended_session_cannot_trade(
    world: dict[str, Any],
    services: Services,
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
    client: testing.ASGIConductor,
) -> None:
    token, _ = services.tokens.issue(TokenType.ACCESS, str(world["alice"]), extra={"fam": "f1"})
    trader = Trader(client, token)
    before = stores(pg_admin, raw_redis)
    # the refresh family is gone (logout, or reuse of a dead refresh token): the token is dead too
    assert_error(await trader.open(open_body(world["instrument"])), 401, "unauthorized")
    assert stores(pg_admin, raw_redis) == before
    await services.redis.set(keys.refresh_family("f1"), "live-refresh-jti")
    assert (await trader.open(open_body(world["instrument"]))).status_code == 201


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("x" * (17 * 1024), "application/json", 413, "payload_too_large"),
        ('{"lotSize": 1}', "text/plain", 415, "unsupported_media_type"),
    ],
)
async def test_oversized_or_non_json_bodies_are_refused_before_anything(
    world: dict[str, Any],
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
    client: testing.ASGIConductor,
    body: str,
    content_type: str,
    status: int,
    code: str,
) -> None:
    before = stores(pg_admin, raw_redis)
    result = await client.simulate_post(
        "/api/positions/open",
        body=body,
        headers={**world["as_alice"].headers, "Content-Type": content_type},
    )
    assert_error(result, status, code)
    assert stores(pg_admin, raw_redis) == before


# A trade waits for a replica (REDIS_WAIT_REPLICAS) and a primary without replicas refuses
# writes (min-replicas-to-write): 503 with Retry-After and a stable code, never a 500, and the
# retry with the same clientRequestId is safe (decision 0151). The tests' Redis has no replica.
WAIT_MS = 50  # no replica will answer: the WAIT runs out after this


@pytest.fixture
def lone_primary(redis_admin: redis.Redis) -> Iterator[None]:
    """The tests' Redis refusing writes, as a primary that lost its replica does."""
    redis_admin.config_set("min-replicas-to-write", 1)
    try:
        yield
    finally:
        redis_admin.config_set("min-replicas-to-write", 0)


async def test_a_trade_no_replica_confirmed_is_503_not_replicated_and_its_retry_replays_it(
    world: dict[str, Any], settings: Settings
) -> None:
    waiting = dataclasses.replace(settings, redis_wait_replicas=1, redis_wait_timeout_ms=WAIT_MS)
    body = open_body(world["instrument"], "unconfirmed")
    async with testing.ASGIConductor(create_app(waiting)) as conductor:
        unconfirmed = await conductor.simulate_post(
            "/api/positions/open", json=body, headers=world["as_alice"].headers
        )

    assert_error(unconfirmed, 503, "not_replicated")
    assert unconfirmed.headers["retry-after"] == "1"
    # The write stands on the primary: the same request answers it, once.
    again = await world["as_alice"].open(body)
    assert again.status_code == 201, again.text
    assert again.json["replayed"] is True


async def test_without_the_pipelined_connection_the_trade_waits_all_the_same(
    world: dict[str, Any], services: Services
) -> None:
    """The TLS path: the function call and its WAIT go through one redis-py pipeline."""
    unpipelined = dataclasses.replace(
        services, scripts=Scripts(services.redis, wait_replicas=1, wait_timeout_ms=WAIT_MS)
    )
    caller = Caller.from_claims(services.tokens.issue(TokenType.ACCESS, str(world["alice"]))[1])
    order = OpenOrder(
        instrument_id=world["instrument"],
        direction=1,
        lots_centis=100,
        client_request_id="pool-path",
        client_price_cents=10_000,
        tolerance_ppm=50_000,
        stop_loss_cents=None,
        take_profit_cents=None,
    )

    with pytest.raises(NotReplicated):
        await trades.open_position(unpipelined, caller, order)
    replayed = json.loads(await trades.open_position(services, caller, order))
    assert replayed["replayed"] is True


async def test_a_write_refused_for_want_of_replicas_is_503_unavailable_and_changes_nothing(
    world: dict[str, Any],
    lone_primary: None,
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
) -> None:
    before = stores(pg_admin, raw_redis)
    result = await world["as_alice"].open(open_body(world["instrument"], "refused"))

    assert_error(result, 503, "unavailable")
    assert result.headers["retry-after"] == "1"
    assert stores(pg_admin, raw_redis) == before
