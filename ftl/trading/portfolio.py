"""GET /api/portfolio: the wallet at current prices and the open positions, from hot state,
computed with the rules of ftl/market/rules.py (the same integers the Lua scripts use)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec
from msgspec import Meta

from ftl.core.answers import Answer, Points
from ftl.core.money import json_number
from ftl.market import rules
from ftl.store import keys
from ftl.store.services import Services
from ftl.trading import wallets
from ftl.trading.positions import Position, from_hash


class Wallet(Answer):
    """The `wallet` of SPEC §3.2, as the Lua scripts write it in the open and close answers."""

    balance: Points
    used_margin: Points
    equity: Points
    free_margin: Points
    margin_level: Annotated[float, Meta(description="Percent, 2 dp.")] | None


class MeWallet(Wallet):
    realized_pnl: Points


class OpenPosition(Position):
    """An open position with its current price and unrealised PnL."""

    price: Points
    unrealized_pnl: Points


class Portfolio(Answer):
    balance: Points
    equity: Points
    used_margin: Points
    free_margin: Points
    margin_level: Points | None
    unrealized_pnl: Points
    realized_pnl: Points
    positions: list[OpenPosition]


async def _hot(services: Services, user_id: UUID) -> tuple[dict[str, str], list[str]]:
    async with services.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.wallet(user_id))
        pipe.smembers(keys.open_positions(user_id))
        wallet, ids = await pipe.execute()
    return wallet, sorted(ids)


async def portfolio(services: Services, user_id: UUID) -> Portfolio:
    wallet, ids = await _hot(services, user_id)
    if not wallet:
        await wallets.load(services, user_id)
        wallet, ids = await _hot(services, user_id)
    async with services.redis.pipeline(transaction=False) as pipe:
        for pid in ids:
            pipe.hgetall(keys.position(pid))
        hashes: list[dict[str, str]] = await pipe.execute()
    instrument_ids = sorted({f["instrumentId"] for f in hashes})
    async with services.redis.pipeline(transaction=False) as pipe:
        for iid in instrument_ids:
            pipe.hmget(keys.instrument(iid), "liveBasePriceCents", "kModMicros", "netLotsCentis")
        prices = {
            iid: rules.price_cents(int(live), int(k_mod), int(net))
            for iid, (live, k_mod, net) in zip(instrument_ids, await pipe.execute(), strict=True)
        }
    positions: list[OpenPosition] = []
    unrealized = 0
    for pid, fields in zip(ids, hashes, strict=True):
        price = prices[fields["instrumentId"]]
        pnl = rules.pnl_cents(
            int(fields["entryCents"]), price, int(fields["lotsCentis"]), int(fields["direction"])
        )
        unrealized += pnl
        positions.append(
            OpenPosition(
                **msgspec.structs.asdict(from_hash(pid, fields)),
                price=json_number(price),
                unrealized_pnl=json_number(pnl),
            )
        )
    positions.sort(key=lambda p: (p.opened_at, p.id), reverse=True)
    account = rules.Account(int(wallet["balanceCents"]), int(wallet["usedMarginCents"]), unrealized)
    return Portfolio(
        **msgspec.structs.asdict(account_view(account)),
        unrealized_pnl=json_number(unrealized),
        realized_pnl=json_number(int(wallet["realizedCents"])),
        positions=positions,
    )


def account_view(account: rules.Account) -> Wallet:
    """The wallet figures of an answer (the `wallet` of a trade's, as lua/lib/engine.lua's
    E.wallet_json writes them)."""
    level = account.margin_level_basis
    return Wallet(
        balance=json_number(account.balance),
        used_margin=json_number(account.used_margin),
        equity=json_number(account.equity),
        free_margin=json_number(account.free_margin),
        margin_level=None if level is None else json_number(level),
    )


async def wallet(services: Services, user_id: UUID) -> MeWallet:
    """The `wallet` of SPEC §3.2 (and the realised PnL) at current prices."""
    summary = await portfolio(services, user_id)
    # NOTE: every field of the wallet is one of the portfolio's, under the same name.
    return MeWallet(**{name: getattr(summary, name) for name in MeWallet.__struct_fields__})
