"""The ticks a margin evaluation replays: the recent tick logs in Redis, Postgres `price_ticks`
where a log no longer reaches, parsed once per process and shared by every user a pass
evaluates."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from uuid import UUID

from sqlalchemy import select

from ftl.market import rules
from ftl.store import keys
from ftl.store.db.models import Instrument, PriceTick
from ftl.store.services import Services
from ftl.store.ticks import Tick, TickSource
from ftl.trading.margin.replay import Curve, PriceRange, WindowRanges

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
# PERF: every pass reads the logs again from its users' oldest box or watermark, mostly ticks an
# earlier pass parsed: a logged tick's JSON is parsed once per process (a tick never changes; the
# logs hold 2,000 a instrument; docs/decisions/0162).
TICK_PARSE_CACHE = 100_000
_logged_tick = lru_cache(maxsize=TICK_PARSE_CACHE)(Tick.from_json)


def _ms(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_MS


async def _ticks_from_postgres(
    services: Services, instrument_id: UUID, first_seq: int, before_seq: int | None
) -> list[Tick]:
    """Ticks `first_seq <= seq < before_seq` of the instrument from `price_ticks`, by seq."""
    query = (
        select(
            PriceTick.seq,
            PriceTick.at,
            PriceTick.price,
            PriceTick.live_base_price,
            PriceTick.net_lots,
            PriceTick.source,
            Instrument.idx,
            Instrument.k_mod,
        )
        .join(Instrument, Instrument.id == PriceTick.instrument_id)
        .where(PriceTick.instrument_id == instrument_id, PriceTick.seq >= first_seq)
        .order_by(PriceTick.seq)
    )
    if before_seq is not None:
        query = query.where(PriceTick.seq < before_seq)
    async with services.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        Tick(
            instrument_id=instrument_id,
            idx=idx,
            seq=seq,
            price_cents=int(price * 100),
            live_base_price_cents=int(live * 100),
            net_lots_centis=int(net * 100),
            source=TickSource(source),
            at_ms=_ms(at),
            # NOTE: price_ticks keeps no kMod: the instrument's current one stands in.
            k_mod_micros=int(k_mod * rules.PPM),
        )
        for seq, at, price, live, net, source, idx, k_mod in rows
    ]


async def ticks_from(
    services: Services, firsts: Mapping[UUID, int], befores: Mapping[UUID, int] | None = None
) -> dict[UUID, list[Tick]]:
    """Every tick with `seq >= firsts[instrument]` (and `seq < befores[instrument]` where given)
    of each instrument: the recent logs (keys.tick_log, one round trip for all), Postgres for
    whatever older part a log no longer holds."""
    befores = befores or {}
    async with services.redis.pipeline(transaction=False) as pipe:
        for iid, first in firsts.items():
            before = befores.get(iid)
            pipe.zrangebyscore(
                keys.tick_log(iid), first, "+inf" if before is None else f"({before}"
            )
        logged: list[list[str]] = await pipe.execute()
    found = {}
    for (iid, first), raws in zip(firsts.items(), logged, strict=True):
        ticks = [_logged_tick(raw) for raw in raws]
        if not ticks or ticks[0].seq > first:
            before = ticks[0].seq if ticks else befores.get(iid)
            ticks = await _ticks_from_postgres(services, iid, first, before) + ticks
        found[iid] = ticks
    return found


class TickLogs:
    """The ticks one evaluation pass reads, parsed once and shared by every user it evaluates.

    `cut_ms` is the Redis clock when the pass began (or last advanced): a tick with `at` below
    it was written by then, so every user replays up to an instant whose ticks are all here.
    """

    def __init__(self, services: Services, cut_ms: int) -> None:
        self.services = services
        self.cut_ms = cut_ms
        self._ticks: dict[UUID, list[Tick]] = {}  # by seq, from self._first[instrument] on
        self._seqs: dict[UUID, list[int]] = {}  # the seqs of self._ticks, for bisect
        self._first: dict[UUID, int] = {}
        self._ranges: dict[UUID, WindowRanges] = {}  # before cut_ms, built when first asked

    @classmethod
    async def begin(cls, services: Services) -> TickLogs:
        seconds, micros = await services.redis.time()
        return cls(services, seconds * 1000 + micros // 1000)

    async def fetch(self, firsts: Mapping[UUID, int]) -> None:
        """Make sure each instrument's ticks with `seq >= firsts[instrument]` are here."""
        missing = {i: f for i, f in firsts.items() if self._first.get(i, f + 1) > f}
        if missing:
            # PERF: only the older part not fetched yet: users' watermarks differ.
            fetched = {i: self._first[i] for i in missing if i in self._first}
            for iid, older in (await ticks_from(self.services, missing, fetched)).items():
                ticks = older + self._ticks.get(iid, [])
                self._ticks[iid], self._first[iid] = ticks, missing[iid]
                self._seqs[iid] = [t.seq for t in ticks]
                self._ranges.pop(iid, None)

    async def advance(self) -> None:
        """Move the cut to now, with the ticks made since the last fetch, so the users a pass
        evaluates later see the trade ticks of the washouts it made earlier: a chain of
        washouts moves on inside the pass instead of waiting a pass per link
        (docs/decisions/0046). Any cut gives the same outcomes (docs/decisions/0040)."""
        seconds, micros = await self.services.redis.time()
        cut = seconds * 1000 + micros // 1000
        ids = list(self._ticks)
        if cut == self.cut_ms or not ids:
            self.cut_ms = cut
            return
        nexts = {
            iid: self._seqs[iid][-1] + 1 if self._seqs[iid] else self._first[iid] for iid in ids
        }
        async with self.services.redis.pipeline(transaction=False) as pipe:
            for iid in ids:
                pipe.zrangebyscore(keys.tick_log(iid), nexts[iid], "+inf")
            logged: list[list[str]] = await pipe.execute()
        for iid, raws in zip(ids, logged, strict=True):
            newer = [_logged_tick(raw) for raw in raws]
            if newer and newer[0].seq != nexts[iid]:
                # NOTE: more ticks than the log keeps were made since the last fetch.
                newer = (await ticks_from(self.services, {iid: nexts[iid]}))[iid]
            if newer:
                self._ticks[iid] = self._ticks[iid] + newer
                self._seqs[iid] = self._seqs[iid] + [t.seq for t in newer]
            # PERF: a range is rebuilt only if some tick of it is judged from this cut on.
            if any(self.cut_ms <= t.at_ms < cut for t in reversed(self._ticks[iid])):
                self._ranges.pop(iid, None)
        self.cut_ms = cut

    def tick_at(self, instrument_id: UUID, seq: int) -> Tick | None:
        """The instrument's tick `seq`, if fetched."""
        seqs = self._seqs.get(instrument_id)
        if seqs is None:
            return None
        at = bisect_left(seqs, seq)
        ticks = self._ticks[instrument_id]
        return ticks[at] if at < len(ticks) and ticks[at].seq == seq else None

    def price_at(self, instrument_id: UUID, seq: int) -> int | None:
        """The price of the instrument's tick `seq`, if fetched."""
        tick = self.tick_at(instrument_id, seq)
        return None if tick is None else tick.price_cents

    def after(self, instrument_id: UUID, seq: int, cut_ms: int) -> list[Tick]:
        """The fetched ticks with a seq above `seq` and `at` before `cut_ms`, by seq."""
        ticks = self._ticks[instrument_id]
        return [
            t for t in ticks[bisect_right(self._seqs[instrument_id], seq) :] if t.at_ms < cut_ms
        ]

    def range_after(self, instrument_id: UUID, seq: int) -> PriceRange | None:
        """The price range of `after(instrument_id, seq, self.cut_ms)`."""
        if instrument_id not in self._ranges:
            self._ranges[instrument_id] = WindowRanges(self._ticks[instrument_id], self.cut_ms)
        return self._ranges[instrument_id].after(seq)


async def last_seq_at(services: Services, instrument_id: UUID, moment: datetime) -> int | None:
    """The seq of the instrument's last tick at or before `moment` (Postgres holds every flushed
    tick; the log covers the last seconds the flusher has not written yet)."""
    cutoff = _ms(moment)
    logged: list[str] = await services.redis.zrange(keys.tick_log(instrument_id), 0, -1)  # type: ignore[assignment]
    in_log = [t.seq for t in map(_logged_tick, logged) if t.at_ms <= cutoff]
    async with services.engine.connect() as conn:
        in_db = (
            await conn.execute(
                select(PriceTick.seq)
                .where(PriceTick.instrument_id == instrument_id, PriceTick.at <= moment)
                .order_by(PriceTick.seq.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
    found = [seq for seq in (*in_log, in_db) if seq is not None]
    return max(found) if found else None


async def current_curve(services: Services, instrument_id: UUID) -> Curve:
    fields: list[str | None] = await services.redis.hmget(  # type: ignore[assignment]
        keys.instrument(instrument_id), ["liveBasePriceCents", "kModMicros", "netLotsCentis"]
    )
    live, k_mod, net = (int(value or 0) for value in fields)
    return Curve(live, k_mod, net)
