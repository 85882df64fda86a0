"""Follow-up passes (docs/decisions/0044, 0047, 0160, 0165): after washouts or trade ticks moved
prices, the holders of those instruments are evaluated again — the washouts' pass at once, the
trades' pass a second late; of each kind at most one is owed at a time, over every instrument
moved until it starts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from ftl.store import keys
from ftl.store.services import Services

# NOTE: a follow-up mark outlives a lost message by at most this: then the next washout (or the
# next flushed trade) asks for a new pass, which takes the instruments the lost one left.
FOLLOW_UP_MARK_TTL_MS = 10_000
# PERF: under a steady trade stream a pass per flush batch kept a worker core busy re-replaying
# the traders (their boxes die with every trade); one trade pass per second at most, over every
# instrument traded meanwhile, bounds it, well inside the 3 s target (docs/decisions/0047, 0160).
TRADE_FOLLOW_UP_DELAY_MS = 1_000


@dataclass(frozen=True)
class Kind:
    """One kind of follow-up pass: its mark, the set of instruments it owes, the mark's TTL."""

    mark: str
    instruments: str
    ttl_ms: int


WASHOUTS = Kind(
    keys.MARGIN_WASHOUT_FOLLOW_UP, keys.MARGIN_WASHOUT_FOLLOW_UP_INSTRUMENTS, FOLLOW_UP_MARK_TTL_MS
)
TRADES = Kind(
    keys.MARGIN_TRADE_FOLLOW_UP,
    keys.MARGIN_TRADE_FOLLOW_UP_INSTRUMENTS,
    FOLLOW_UP_MARK_TTL_MS + TRADE_FOLLOW_UP_DELAY_MS,
)


async def owe(services: Services, kind: Kind, instrument_ids: Iterable[UUID]) -> bool:
    """These instruments' prices moved: they join the one owed pass of `kind`; True when none was
    owed, and the caller sends it (docs/decisions/0160, 0165).

    NOTE: the instruments are added before the mark is tested, in one transaction, so a pass
    taking them (take) either sees them or leaves the mark unset for this ask.
    """
    ids = [str(i) for i in instrument_ids]
    if not ids:
        return False
    async with services.redis.pipeline(transaction=True) as pipe:
        pipe.sadd(kind.instruments, *ids)
        pipe.pexpire(kind.instruments, 2 * kind.ttl_ms)
        pipe.set(kind.mark, 1, nx=True, px=kind.ttl_ms)
        *_, fresh = await pipe.execute()
    return bool(fresh)


async def take(services: Services, kind: Kind) -> list[UUID]:
    """The owed pass of `kind` is starting: the instruments it covers, taken with its mark in one
    transaction (call before the pass reads its cut; prices moved later owe the next pass)."""
    async with services.redis.pipeline(transaction=True) as pipe:
        pipe.smembers(kind.instruments)
        pipe.delete(kind.instruments, kind.mark)
        members, _ = await pipe.execute()
    return sorted((UUID(m) for m in members), key=str)
