"""What one margin evaluation starts from: each user's balance, watermark and open positions,
read for a chunk of users at one cut in one `margin_snapshot.lua` call (SPEC §1.5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from uuid import UUID

from ftl.store import keys
from ftl.store.services import Services
from ftl.trading.margin.replay import HeldPosition, Watermark

SNAPSHOT_POSITIONS = 200  # positions one margin_snapshot.lua call reads at most (and a user)
# PERF: a pass reads the same position and instrument ids over and over (UUID() of a text costs
# more than the rest of a position's fields; docs/decisions/0162).
parsed_id = lru_cache(maxsize=200_000)(UUID)


@dataclass(frozen=True)
class Snapshot:
    """What a replay starts from, read in one step (lua/margin_snapshot.lua)."""

    cut_ms: int
    balance_cents: int
    watermark: Watermark
    version: str
    positions: tuple[HeldPosition, ...]
    fingerprint: str = ""  # of the wallet, as lua/margin_snapshot.lua builds it


async def snapshots(services: Services, user_ids: Sequence[UUID]) -> list[Snapshot | None]:
    """Each user's state at one cut per script call; None for a user whose wallet is not in hot
    state (nothing is open).

    PERF: a call reads users until SNAPSHOT_POSITIONS positions, so Redis is never held much
    longer than half a millisecond (50 users of 20 positions held it 2 ms; decision 0162); the
    users after it get a call (and a cut) of their own."""
    found: list[Snapshot | None] = []
    while len(found) < len(user_ids):
        reply: list[Any] = await services.scripts.call(
            "margin_snapshot",
            keys=[
                key
                for user_id in user_ids[len(found) :]
                for key in (
                    keys.wallet(user_id),
                    keys.open_positions(user_id),
                    keys.margin_watermark(user_id),
                )
            ],
            args=[SNAPSHOT_POSITIONS],
        )
        cut = int(reply[0])
        found += [_snapshot(cut, *user) for user in reply[1]]
    return found


async def snapshot(services: Services, user_id: UUID) -> Snapshot | None:
    """One user's state at the cut (see snapshots)."""
    return (await snapshots(services, [user_id]))[0]


def _snapshot(
    cut: int, balance: str | None, flat: list[str], rows: list[list[str]], fingerprint: str
) -> Snapshot | None:
    if balance is None:
        return None
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    version = fields.pop("v", "0")
    below = fields.pop("below", "0") == "1"
    positions = tuple(
        HeldPosition(
            id=parsed_id(pid),
            instrument_id=parsed_id(iid),
            direction=int(direction),
            lots_centis=int(lots),
            entry_cents=int(entry),
            margin_cents=int(margin),
            open_seq=int(open_seq),
        )
        for pid, iid, direction, lots, entry, margin, open_seq in rows
    )
    seqs = {parsed_id(iid): int(seq) for iid, seq in fields.items()}
    return Snapshot(cut, int(balance), Watermark(seqs, below), version, positions, fingerprint)


async def users_with_open_positions(services: Services) -> list[UUID]:
    """Every user holding an open position now (his `positions:{id}` set exists while non-empty).

    NOTE: scanned from the position sets, not the holders index, so the backstop also catches
    users the index would miss.
    """
    prefix = keys.open_positions("")
    found = [
        UUID(name[len(prefix) :]) async for name in services.redis.scan_iter(f"{prefix}*", 1000)
    ]
    return sorted(set(found), key=str)
