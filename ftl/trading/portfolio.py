"""GET /api/portfolio: the wallet at current prices and the open positions, from hot state,
computed with the rules of ftl/market/rules.py (the same integers the Lua scripts use)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from ftl.core.money import json_number
from ftl.market import rules
from ftl.store import keys
from ftl.store.services import Services
from ftl.trading import wallets
from ftl.trading.positions import from_hash


async def _hot(services: Services, user_id: UUID) -> tuple[dict[str, str], list[str]]:
    async with services.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.wallet(user_id))
        pipe.smembers(keys.open_positions(user_id))
        wallet, ids = await pipe.execute()
    return wallet, sorted(ids)


async def portfolio(services: Services, user_id: UUID) -> dict[str, Any]:
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
    positions = []
    unrealized = 0
    for pid, fields in zip(ids, hashes, strict=True):
        price = prices[fields["instrumentId"]]
        pnl = rules.pnl_cents(
            int(fields["entryCents"]), price, int(fields["lotsCentis"]), int(fields["direction"])
        )
        unrealized += pnl
        view = from_hash(pid, fields)
        view.update(price=json_number(price), unrealizedPnl=json_number(pnl))
        positions.append(view)
    positions.sort(key=lambda p: (p["openedAt"], p["id"]), reverse=True)
    account = rules.Account(int(wallet["balanceCents"]), int(wallet["usedMarginCents"]), unrealized)
    return {
        **account_view(account),
        "unrealizedPnl": json_number(unrealized),
        "realizedPnl": json_number(int(wallet["realizedCents"])),
        "positions": positions,
    }


def account_view(account: rules.Account) -> dict[str, Any]:
    """The wallet figures of an answer (the `wallet` of a trade's, as lua/lib/engine.lua's
    E.wallet_json writes them)."""
    level = account.margin_level_basis
    return {
        "balance": json_number(account.balance),
        "equity": json_number(account.equity),
        "usedMargin": json_number(account.used_margin),
        "freeMargin": json_number(account.free_margin),
        "marginLevel": None if level is None else json_number(level),
    }


WALLET_FIELDS = ("balance", "usedMargin", "equity", "freeMargin", "marginLevel", "realizedPnl")


async def wallet(services: Services, user_id: UUID) -> dict[str, Any]:
    """The `wallet` of SPEC §3.2 (and the realised PnL) at current prices."""
    summary = await portfolio(services, user_id)
    return {name: summary[name] for name in WALLET_FIELDS}
