"""`ftl audit`: clean after trading and a flush; each invariant broken on purpose, in Redis or in
Postgres, is reported under its own kind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
import redis

from ftl.ops.audit import Acknowledged, audit
from ftl.ops.flush import Flusher
from ftl.store import keys
from ftl.store.services import Services
from ftl.trading import trades
from ftl.trading.margin import evaluator, safe_boxes, snapshots
from ftl.trading.margin.replay import SafeBox
from tests.e2e.conftest import run_ftl
from tests.integration.trading_helpers import make_instrument, make_user
from web.body import decode
from web.schemas import OpenPositionBody


@dataclass
class Market:
    instrument: UUID
    users: list[UUID]
    open_ids: list[str]  # one still open per user
    closed_ids: list[str]  # one closed per user
    acknowledged: list[Acknowledged]


async def _open(services: Services, user: UUID, instrument: UUID, request_id: str, n: int) -> str:
    body = {
        "instrumentId": str(instrument),
        "direction": "long" if n % 2 else "short",
        "lotSize": 0.5 + n,
        "clientRequestId": request_id,
        "clientPrice": 100,
        "slippageTolerancePct": 0.05,
    }
    answer = await trades.open_position(
        services,
        trades.Caller(user, "j"),
        decode(json.dumps(body).encode(), OpenPositionBody).order(),
    )
    position_id: str = json.loads(answer)["position"]["id"]
    return position_id


@pytest.fixture
async def market(services: Services, pg_admin: psycopg.Connection) -> Market:
    """Three users, each with one position closed (a PnL on the boards) and one still open,
    all flushed to Postgres."""
    instrument = await make_instrument(services, pg_admin)
    found = Market(instrument, [], [], [], [])
    for n in range(3):
        user = make_user(pg_admin, district_id=n + 1)
        closed = await _open(services, user, instrument, "a", n)
        still_open = await _open(services, user, instrument, "b", n + 1)
        await trades.close_position(services, trades.Caller(user, "j"), UUID(closed), "c")
        found.users.append(user)
        found.open_ids.append(still_open)
        found.closed_ids.append(closed)
        found.acknowledged += [
            Acknowledged(str(user), closed, "a", "c"),
            Acknowledged(str(user), still_open, "b"),
        ]
    await Flusher(services).flush()
    return found


async def kinds(services: Services, acknowledged: list[Acknowledged] | None = None) -> set[str]:
    report = await audit(services, acknowledged or [])
    return {v.kind for v in report.violations}


async def test_traded_and_flushed_state_is_clean(services: Services, market: Market) -> None:
    report = await audit(services, market.acknowledged)
    assert report.violations == []
    assert (report.wallets, report.open_positions, report.acknowledged) == (3, 3, 6)


Breakage = Callable[[Services, psycopg.Connection, Market], Awaitable[object]]


async def _pg(pg: psycopg.Connection, sql: str, *params: object) -> None:
    pg.execute(sql, params)


async def _widen_box(services: Services, user: UUID) -> None:
    """The user's safe box with a cent more slack than his wallet has."""
    await evaluator.evaluate_pass(services, [user])
    (box,) = await safe_boxes.boxes(services, [user])
    state = await snapshots.snapshot(services, user)
    assert box is not None and state is not None
    wide = SafeBox(box.below, box.slack + 1, box.headroom, box.instruments)
    await services.redis.set(keys.margin_box(user), safe_boxes.box_text(state.fingerprint, wide))


async def test_the_safe_boxes_the_evaluator_makes_keep_their_promise(
    services: Services, market: Market
) -> None:
    await evaluator.evaluate_pass(services, market.users)
    assert all(await safe_boxes.boxes(services, market.users))
    assert (await audit(services, market.acknowledged)).violations == []


BREAKAGES: dict[str, tuple[Breakage, set[str]]] = {
    "a wallet balance off by a cent in Postgres": (
        lambda s, pg, m: _pg(
            pg, "UPDATE wallets SET balance = balance + 0.01 WHERE user_id = %s", m.users[0]
        ),
        {"balance", "hot_wallet"},
    ),
    "a closed position's PnL changed": (
        lambda s, pg, m: _pg(
            pg,
            "UPDATE cfd_positions SET realized_pnl = realized_pnl + 1 WHERE id = %s",
            m.closed_ids[0],
        ),
        {"realized_pnl", "ledger", "board"},
    ),
    "a close's ledger row lost": (
        lambda s, pg, m: _pg(
            pg, "DELETE FROM wallet_ledger WHERE position_id = %s", m.closed_ids[1]
        ),
        {"balance", "realized_pnl", "ledger"},
    ),
    "a bonus without its ledger row": (
        lambda s, pg, m: _pg(
            pg,
            "UPDATE wallets SET bonus_total = 5, balance = balance + 5 WHERE user_id = %s",
            m.users[2],
        ),
        {"balance", "bonus", "hot_wallet"},
    ),
    "an instrument's netLots in Postgres": (
        lambda s, pg, m: _pg(
            pg, "UPDATE instruments SET net_lots = net_lots + 1 WHERE id = %s", m.instrument
        ),
        {"net_lots"},
    ),
    "an instrument's netLots in Redis": (
        lambda s, pg, m: s.redis.hincrby(keys.instrument(m.instrument), "netLotsCentis", 1),
        {"hot_net_lots"},
    ),
    "a hot wallet's balance": (
        lambda s, pg, m: s.redis.hincrby(keys.wallet(m.users[0]), "balanceCents", 1),
        {"hot_wallet"},
    ),
    "a board score": (
        lambda s, pg, m: _bump_board(s, m.users[1]),
        {"board"},
    ),
    "a position closed in Postgres but open in Redis": (
        lambda s, pg, m: _pg(
            pg,
            "UPDATE cfd_positions SET status = 'closed', exit_price = entry_price,"
            " realized_pnl = 0, closed_by = 'user', closed_at = now() WHERE id = %s",
            m.open_ids[0],
        ),
        {"open_and_closed", "net_lots", "hot_net_lots", "ledger"},
    ),
    "an open position missing from Postgres": (
        lambda s, pg, m: _pg(pg, "DELETE FROM cfd_positions WHERE id = %s", m.open_ids[1]),
        {"not_durable", "net_lots", "hot_net_lots"},
    ),
    "an open position missing from Redis": (
        lambda s, pg, m: s.redis.srem(keys.open_positions(m.users[2]), m.open_ids[2]),
        {"open_and_closed"},
    ),
    "a count of open positions off by one in Redis": (
        lambda s, pg, m: s.redis.hincrby(keys.held(m.users[0]), str(m.instrument), 1),
        {"held"},
    ),
    "a holder missing from the holders index": (
        lambda s, pg, m: s.redis.srem(keys.holders(m.instrument), str(m.users[1])),
        {"holders"},
    ),
    "a user in the holders index with no open position": (
        lambda s, pg, m: s.redis.sadd(keys.holders(m.instrument), str(uuid4())),
        {"holders"},
    ),
    "a margin safe box promising more than the wallet allows": (
        lambda s, pg, m: _widen_box(s, m.users[0]),
        {"margin_box"},
    ),
    "hot state lost": (
        lambda s, pg, m: s.redis.delete(keys.INSTRUMENT_IDX),
        {"hot_state_missing"},
    ),
}


async def _bump_board(services: Services, user: UUID) -> None:
    member = await services.redis.hget(keys.wallet(user), "boardMember")
    assert member
    await services.redis.zincrby(keys.BOARD_OVERALL, 100, member)


@pytest.mark.parametrize("breakage", list(BREAKAGES))
async def test_each_broken_invariant_is_reported(
    services: Services, pg_admin: psycopg.Connection, market: Market, breakage: str
) -> None:
    breaks, expected = BREAKAGES[breakage]
    await breaks(services, pg_admin, market)
    assert await kinds(services) == expected


async def test_an_acknowledged_trade_missing_or_unclosed_is_reported(
    services: Services, market: Market
) -> None:
    user = str(market.users[0])
    lost = Acknowledged(user, str(uuid4()), "lost")
    unclosed = Acknowledged(user, market.open_ids[0], "b", "close-acknowledged")
    doubled = Acknowledged(user, market.closed_ids[0], "another-open")
    report = await audit(services, [*market.acknowledged, lost, unclosed, doubled])
    problems = {(v.subject, v.details["problem"]) for v in report.violations}
    assert problems == {
        (lost.position_id, "not in Postgres"),
        (unclosed.position_id, "close missing"),
        (doubled.position_id, "open differs"),
        (doubled.position_id, "two opens, one position"),
    }


async def test_the_command_prints_violations_and_exits_1(
    services: Services, market: Market, redis_admin: redis.Redis, tmp_path: Path
) -> None:
    acknowledged = tmp_path / "acknowledged.jsonl"
    acknowledged.write_text(
        "\n".join(
            json.dumps(
                {
                    "userId": a.user_id,
                    "positionId": a.position_id,
                    "openRequestId": a.open_request_id,
                    "closeRequestId": a.close_request_id,
                }
            )
            for a in market.acknowledged
        )
    )
    clean = await asyncio.to_thread(run_ftl, "audit", "--acknowledged", str(acknowledged))
    assert (clean.returncode, clean.stdout) == (0, ""), clean.stderr
    assert "audit: clean: 3 wallets, 3 open positions" in clean.stderr

    redis_admin.hincrby(keys.wallet(market.users[0]), "balanceCents", 1)
    broken = await asyncio.to_thread(run_ftl, "audit")
    assert broken.returncode == 1
    lines = broken.stdout.splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [["hot_wallet", str(market.users[0])]] * 2
    problems = sorted(json.loads(line.split(" ", 2)[2])["problem"] for line in lines)
    assert problems == ["balance is not 10,000 + realized + bonus", "differs from Postgres"]
    assert "audit: 2 violations (hot_wallet 2)" in broken.stderr


async def test_the_command_refuses_while_the_outbox_is_not_drained(
    services: Services, market: Market
) -> None:
    await services.redis.xadd(keys.OUTBOX, {"wallet": str(market.users[0])})
    waited = await asyncio.to_thread(run_ftl, "audit", "--wait-flush", "0.3")
    assert waited.returncode == 2
    assert "the outbox still holds 1 entries after 0.3 s" in waited.stderr
    anyway = await asyncio.to_thread(run_ftl, "audit", "--wait-flush", "0")
    assert anyway.returncode == 0, anyway.stdout
