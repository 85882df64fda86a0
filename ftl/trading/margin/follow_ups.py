"""Follow-up passes (docs/decisions/0044, 0047): after washouts or trade ticks moved a price,
the holders of the instrument are evaluated again, at most one pending pass of each kind per
instrument."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from ftl.store import keys
from ftl.store.services import Services

# NOTE: a follow-up mark outlives a lost message by at most this: then the next washout on the
# instrument sends a new follow-up.
FOLLOW_UP_MARK_TTL_MS = 10_000
# PERF: under a steady trade stream a pass per flush batch kept a worker core busy re-replaying
# the traders (their boxes die with every trade); one pass per instrument per second at most
# bounds it, well inside the 3 s target (docs/decisions/0047).
TRADE_FOLLOW_UP_DELAY_MS = 1_000
FOLLOW_UP_MARKS = (keys.margin_follow_up, keys.margin_trade_follow_up)


async def owe_follow_up(
    services: Services, instrument_ids: Iterable[UUID], *, after_trades: bool = False
) -> list[UUID]:
    """Of the instruments washouts (or, `after_trades`, the flusher's trade ticks) just moved,
    those no pending pass of that kind will cover yet (each marked owed now): the caller
    evaluates their holders again (docs/decisions/0044, 0047). A trade pass is sent
    TRADE_FOLLOW_UP_DELAY_MS late, so its mark lives that much longer."""
    ids = sorted(instrument_ids, key=str)
    mark = keys.margin_trade_follow_up if after_trades else keys.margin_follow_up
    ttl_ms = FOLLOW_UP_MARK_TTL_MS + (TRADE_FOLLOW_UP_DELAY_MS if after_trades else 0)
    async with services.redis.pipeline(transaction=False) as pipe:
        for iid in ids:
            pipe.set(mark(iid), 1, nx=True, px=ttl_ms)
        marked: list[bool | None] = await pipe.execute()
    return [iid for iid, fresh in zip(ids, marked, strict=True) if fresh]


async def pay_follow_up(services: Services, instrument_ids: Iterable[UUID]) -> None:
    """A pass over these instruments' holders is starting: the follow-ups of either kind owed
    on them are covered by it (call before the pass reads its cut)."""
    names = [mark(i) for i in instrument_ids for mark in FOLLOW_UP_MARKS]
    if names:
        await services.redis.delete(*names)
