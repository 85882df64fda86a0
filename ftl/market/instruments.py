"""Instrument hot state: the `instrument:{id}` hash and the `instrument_idx` map in Redis.

Fields of the hash (all strings in Redis): id, idx, sportmonksPlayerId, name, team, position,
formIndex, basePriceCents, liveBasePriceCents, kModMicros (micro-points of price per lot),
netLotsCentis (hundredths of a lot), seq, isActive, frozen, degraded (0/1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy import update

from ftl.core.errors import NotFound
from ftl.core.money import to_cents
from ftl.market import prices
from ftl.store import keys
from ftl.store.db.models import Instrument
from ftl.store.services import Services

MICROS = Decimal(1_000_000)


@dataclass(frozen=True)
class InstrumentState:
    id: UUID
    idx: int
    sportmonks_player_id: int
    name: str
    team: str
    position: str
    form_index: Decimal
    base_price_cents: int
    live_base_price_cents: int
    k_mod_micros: int
    net_lots_centis: int
    seq: int
    is_active: bool
    frozen: bool
    degraded: bool

    @classmethod
    def from_row(cls, row: Instrument) -> InstrumentState:
        return cls(
            id=row.id,
            idx=row.idx,
            sportmonks_player_id=row.sportmonks_player_id,
            name=row.name,
            team=row.team,
            position=row.position.value,
            form_index=row.form_index,
            base_price_cents=to_cents(row.base_price),
            live_base_price_cents=to_cents(row.live_base_price),
            k_mod_micros=int(row.k_mod * MICROS),
            net_lots_centis=int(row.net_lots * 100),
            seq=row.seq,
            is_active=row.is_active,
            frozen=row.frozen,
            degraded=row.degraded,
        )

    def to_hash(self) -> dict[str, str]:
        return {
            "id": str(self.id),
            "idx": str(self.idx),
            "sportmonksPlayerId": str(self.sportmonks_player_id),
            "name": self.name,
            "team": self.team,
            "position": self.position,
            "formIndex": str(self.form_index),
            "basePriceCents": str(self.base_price_cents),
            "liveBasePriceCents": str(self.live_base_price_cents),
            "kModMicros": str(self.k_mod_micros),
            "netLotsCentis": str(self.net_lots_centis),
            "seq": str(self.seq),
            "isActive": str(int(self.is_active)),
            "frozen": str(int(self.frozen)),
            "degraded": str(int(self.degraded)),
        }

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> InstrumentState:
        return cls(
            id=UUID(fields["id"]),
            idx=int(fields["idx"]),
            sportmonks_player_id=int(fields["sportmonksPlayerId"]),
            name=fields["name"],
            team=fields["team"],
            position=fields["position"],
            form_index=Decimal(fields["formIndex"]),
            base_price_cents=int(fields["basePriceCents"]),
            live_base_price_cents=int(fields["liveBasePriceCents"]),
            k_mod_micros=int(fields["kModMicros"]),
            net_lots_centis=int(fields["netLotsCentis"]),
            seq=int(fields["seq"]),
            is_active=fields["isActive"] == "1",
            frozen=fields["frozen"] == "1",
            degraded=fields["degraded"] == "1",
        )


async def load_missing(redis: Redis, states: Iterable[InstrumentState]) -> int:
    """Put instruments that Redis does not hold yet into hot state; returns how many.

    NOTE: an instrument already in Redis is left alone: its `netLots`, `seq` and live base are
    newer than any Postgres copy until the flusher catches up.
    """
    states = list(states)
    if not states:
        return 0
    present = await redis.smismember(keys.INSTRUMENT_IDS, [str(s.id) for s in states])
    missing = [s for s, here in zip(states, present, strict=True) if not here]
    async with redis.pipeline(transaction=True) as pipe:
        for state in missing:
            fields: Mapping[Any, Any] = state.to_hash()
            pipe.hset(keys.instrument(state.id), mapping=fields)
            pipe.hset(keys.INSTRUMENT_IDX, str(state.idx), str(state.id))
            pipe.sadd(keys.INSTRUMENT_IDS, str(state.id))
        await pipe.execute()
    return len(missing)


async def read(redis: Redis, instrument_id: UUID) -> InstrumentState | None:
    fields: dict[str, str] = await redis.hgetall(keys.instrument(instrument_id))  # type: ignore[assignment]
    return InstrumentState.from_hash(fields) if fields else None


async def read_many(redis: Redis, rows: Sequence[Instrument]) -> list[InstrumentState]:
    """Hot state of these instruments in one round trip. Redis holds the live base, net lots and
    flags; the Postgres row (what the flusher last wrote) stands in only where Redis has none."""
    async with redis.pipeline(transaction=False) as pipe:
        for row in rows:
            pipe.hgetall(keys.instrument(row.id))
        hashes: list[dict[str, str]] = await pipe.execute()
    return [
        InstrumentState.from_hash(fields) if fields else InstrumentState.from_row(row)
        for row, fields in zip(rows, hashes, strict=True)
    ]


K_MOD_MAX_MICROS = 2_000_000  # 2.00 points per lot: the range lua/lib/engine.lua is exact in


@dataclass(frozen=True)
class InstrumentChange:
    """What an admin changes on an instrument (SPEC §3.3): activation and/or kMod (micro-points
    of price per lot, 0 to K_MOD_MAX_MICROS)."""

    is_active: bool | None
    k_mod_micros: int | None


async def administer(services: Services, instrument_id: UUID, change: InstrumentChange) -> None:
    """Apply an admin's change: Postgres (the truth) first, then hot state, where the trade
    scripts read `isActive` and `kModMicros`. A kMod change moves the price: it emits a tick
    (prices.set_k_mod), so subscribers, levels and the margin replay see the new curve."""
    values: dict[str, Any] = {}
    if change.is_active is not None:
        values["is_active"] = change.is_active
    if change.k_mod_micros is not None:
        values["k_mod"] = Decimal(change.k_mod_micros) / MICROS
    async with services.engine.begin() as conn:
        found = await conn.execute(
            update(Instrument)
            .where(Instrument.id == instrument_id)
            .values(**values)
            .returning(Instrument.id)
        )
        if found.first() is None:
            raise NotFound("not_found", "No such instrument.", {"instrumentId": str(instrument_id)})
    key = keys.instrument(instrument_id)
    if not await services.redis.exists(key):
        return  # NOTE: loaded from Postgres, with the change, when first needed
    if change.is_active is not None:
        await services.redis.hset(key, "isActive", str(int(change.is_active)))
    if change.k_mod_micros is not None:
        await prices.set_k_mod(services, instrument_id, change.k_mod_micros)
