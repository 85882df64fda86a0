"""Follow-up passes (docs/decisions/0044, 0047, 0160): after washouts or trade ticks moved a
price, the holders of the instrument are evaluated again — a washout's pass at once, at most one
pending per instrument; the trades' pass a second late, at most one pending in all."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from ftl.store import keys
from ftl.store.services import Services

# NOTE: a follow-up mark outlives a lost message by at most this: then the next washout on the
# instrument (or the next flushed trade) asks for a new pass.
FOLLOW_UP_MARK_TTL_MS = 10_000
# PERF: under a steady trade stream a pass per flush batch kept a worker core busy re-replaying
# the traders (their boxes die with every trade); one trade pass per second at most, over every
# instrument traded meanwhile, bounds it, well inside the 3 s target (docs/decisions/0047, 0160).
TRADE_FOLLOW_UP_DELAY_MS = 1_000
TRADE_FOLLOW_UP_MARK_TTL_MS = FOLLOW_UP_MARK_TTL_MS + TRADE_FOLLOW_UP_DELAY_MS


async def owe_follow_up(services: Services, instrument_ids: Iterable[UUID]) -> list[UUID]:
    """Of the instruments washouts just moved, those no pending follow-up covers yet (each marked
    owed now): the caller evaluates their holders again (docs/decisions/0044)."""
    ids = sorted(instrument_ids, key=str)
    async with services.redis.pipeline(transaction=False) as pipe:
        for iid in ids:
            pipe.set(keys.margin_follow_up(iid), 1, nx=True, px=FOLLOW_UP_MARK_TTL_MS)
        marked: list[bool | None] = await pipe.execute()
    return [iid for iid, fresh in zip(ids, marked, strict=True) if fresh]


async def pay_follow_up(services: Services, instrument_ids: Iterable[UUID]) -> None:
    """A pass over these instruments' holders is starting: the washout follow-ups owed on them
    are covered by it (call before the pass reads its cut)."""
    names = [keys.margin_follow_up(i) for i in instrument_ids]
    if names:
        await services.redis.delete(*names)


async def owe_trade_pass(services: Services, instrument_ids: Iterable[UUID]) -> bool:
    """Trades moved these instruments (the flusher's ask, after its commit): they join the one
    owed trade pass; True when none was owed, and the caller sends it TRADE_FOLLOW_UP_DELAY_MS
    late (docs/decisions/0160).

    NOTE: the instruments are added before the mark is tested, in one transaction, so a pass
    taking them (take_trade_pass) either sees them or leaves the mark unset for this ask.
    """
    ids = [str(i) for i in instrument_ids]
    if not ids:
        return False
    async with services.redis.pipeline(transaction=True) as pipe:
        pipe.sadd(keys.MARGIN_TRADE_FOLLOW_UP_INSTRUMENTS, *ids)
        pipe.pexpire(keys.MARGIN_TRADE_FOLLOW_UP_INSTRUMENTS, 2 * TRADE_FOLLOW_UP_MARK_TTL_MS)
        pipe.set(keys.MARGIN_TRADE_FOLLOW_UP, 1, nx=True, px=TRADE_FOLLOW_UP_MARK_TTL_MS)
        *_, fresh = await pipe.execute()
    return bool(fresh)


async def take_trade_pass(services: Services) -> list[UUID]:
    """The owed trade pass is starting: the instruments it covers, taken with its mark in one
    transaction (call before the pass reads its cut; trades flushed later owe the next pass)."""
    async with services.redis.pipeline(transaction=True) as pipe:
        pipe.smembers(keys.MARGIN_TRADE_FOLLOW_UP_INSTRUMENTS)
        pipe.delete(keys.MARGIN_TRADE_FOLLOW_UP_INSTRUMENTS, keys.MARGIN_TRADE_FOLLOW_UP)
        members, _ = await pipe.execute()
    return sorted((UUID(m) for m in members), key=str)
