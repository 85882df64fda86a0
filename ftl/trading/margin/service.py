"""The margin replay service (SPEC §1.5, §5.4): load a user's state and ticks, run the pure replay
(ftl/trading/margin/replay.py), and commit its outcome in one `position_system_close.lua` call.

One evaluation:
1. The pass (one user, or every holder after a tick batch) reads the Redis clock: its cut.
2. `margin_snapshot.lua` reads, in one step, the balance, the watermark (with its version) and
   the open positions (of a chunk of users at once in a pass).
3. The ticks of every held instrument after the watermark and before the cut's millisecond come
   from the recent tick log (parsed once per pass), and from Postgres `price_ticks` where the log
   no longer reaches.
4. When no price in that window can take the level below 100 %, the quick check settles the
   outcome without walking the ticks (docs/decisions/0043); otherwise the replay runs. Its
   washouts, warnings and new watermark go to `position_system_close.lua`, which applies them
   only if the watermark version is still the one read in step 2 (else the evaluation starts
   again), so concurrent or repeated runs close nothing twice.
5. The events it wrote to the `margin_outbox` stream become `margin_events` rows (and washout
   emails) in Postgres, exactly once by the rows' unique cause.

An evaluation that ends without a washout also leaves the user's safe box
(ftl/trading/margin/replay.py SafeBox): after-tick passes leave out the holders whose box the
ticks since could not have strained, and take the others likeliest to breach first
(docs/decisions/0046).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ftl.accounts import email
from ftl.core import metrics
from ftl.core.money import from_cents
from ftl.market import rules
from ftl.store import keys
from ftl.store.db.models import (
    CfdPosition,
    Instrument,
    MarginEvent,
    MarginEventKind,
    PriceTick,
    User,
)
from ftl.store.leases import Lease
from ftl.store.services import Services
from ftl.store.ticks import Tick, TickSource
from ftl.trading import wallets
from ftl.trading.margin.replay import (
    Curve,
    HeldInstrument,
    HeldPosition,
    PriceRange,
    Replay,
    SafeBox,
    Watermark,
    WindowRanges,
    replay,
    replay_if_quiet,
    safe_box,
)

log = logging.getLogger(__name__)

WASHOUT = "washout"
STALE_RETRIES = 5  # a run that keeps losing the watermark race gives way to the next trigger
OUTBOX_BATCH_EVENTS = 500
# An uneventful replay moves the watermark only past this many ticks: settled from price ranges
# (replay_if_quiet), a long window costs nothing more; walked tick by tick, it does.
WATERMARK_LAG_TICKS = 200
WATERMARK_LAG_WALKED_TICKS = 20
EVALUATION_CONCURRENCY = 16  # users committing at once in one pass (Redis runs scripts one by one)
# NOTE: a follow-up mark outlives a lost message by at most this: then the next washout on the
# instrument sends a new follow-up.
FOLLOW_UP_MARK_TTL_MS = 10_000
# PERF: under a steady trade stream a pass per flush batch kept a worker core busy re-replaying
# the traders (their boxes die with every trade); one pass per instrument per second at most
# bounds it, well inside the 3 s target (docs/decisions/0047).
TRADE_FOLLOW_UP_DELAY_MS = 1_000
FOLLOW_UP_MARKS = (keys.margin_follow_up, keys.margin_trade_follow_up)
SNAPSHOT_CHUNK_USERS = 50  # users read by one margin_snapshot.lua call (< 1 ms of Redis time)
# Safe boxes (docs/decisions/0046): checked a chunk of holders per margin_boxes.lua call; a box
# lapses after this many ticks on one instrument (so a user it leaves out still gets his
# watermark moved, and his window stays inside the tick log) and after its TTL (users who left).
BOX_CHUNK_USERS = 500
BOX_MAX_TICKS = 150
BOX_TTL_MS = 600_000
BACKSTOP_PERIOD_S = 300  # the clock sends the backstop sweep every 5 minutes
BACKSTOP_LEASE_TTL_MS = 30_000  # SPEC §5.4; renewed while the sweep runs (ftl/store/leases.py)
BACKSTOP_CHUNK_USERS = 500  # users per pass of the sweep (well under a second per pass)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Snapshot:
    """What a replay starts from, read in one step (lua/margin_snapshot.lua)."""

    cut_ms: int
    balance_cents: int
    watermark: Watermark
    version: str
    positions: tuple[HeldPosition, ...]
    fingerprint: str = ""  # of the wallet, as lua/margin_snapshot.lua builds it


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one user's evaluation: the replay as committed, and the closes applied
    (fewer than its washouts when some position was closed meanwhile)."""

    replay: Replay | None
    closed: int
    box: SafeBox | None = None  # for the wallet of `fingerprint`, when one holds
    fingerprint: str = ""


def _ms(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_MS


async def snapshots(services: Services, user_ids: Sequence[UUID]) -> list[Snapshot | None]:
    """Each user's state at one cut, in one script call; None for a user whose wallet is not in
    hot state (nothing is open)."""
    reply: list[Any] = await services.scripts.call(
        "margin_snapshot",
        keys=[
            key
            for user_id in user_ids
            for key in (
                keys.wallet(user_id),
                keys.open_positions(user_id),
                keys.margin_watermark(user_id),
            )
        ],
    )
    cut = int(reply[0])
    return [_snapshot(cut, *user) for user in reply[1]]


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
            id=UUID(pid),
            instrument_id=UUID(iid),
            direction=int(direction),
            lots_centis=int(lots),
            entry_cents=int(entry),
            margin_cents=int(margin),
            open_seq=int(open_seq),
        )
        for pid, iid, direction, lots, entry, margin, open_seq in rows
    )
    seqs = {UUID(iid): int(seq) for iid, seq in fields.items()}
    return Snapshot(cut, int(balance), Watermark(seqs, below), version, positions, fingerprint)


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
        ticks = [Tick.from_json(raw) for raw in raws]
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
            newer = [Tick.from_json(raw) for raw in raws]
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


async def _last_seq_at(services: Services, instrument_id: UUID, moment: datetime) -> int | None:
    """The seq of the instrument's last tick at or before `moment` (Postgres holds every flushed
    tick; the log covers the last seconds the flusher has not written yet)."""
    cutoff = _ms(moment)
    logged: list[str] = await services.redis.zrange(keys.tick_log(instrument_id), 0, -1)  # type: ignore[assignment]
    in_log = [t.seq for t in map(Tick.from_json, logged) if t.at_ms <= cutoff]
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


async def _current_curve(services: Services, instrument_id: UUID) -> Curve:
    fields: list[str | None] = await services.redis.hmget(  # type: ignore[assignment]
        keys.instrument(instrument_id), ["liveBasePriceCents", "kModMicros", "netLotsCentis"]
    )
    live, k_mod, net = (int(value or 0) for value in fields)
    return Curve(live, k_mod, net)


def _first_opens(state: Snapshot) -> dict[UUID, int]:
    """The seq of the first open of the user's positions on each instrument he holds."""
    firsts: dict[UUID, int] = {}
    for p in state.positions:
        firsts[p.instrument_id] = min(p.open_seq, firsts.get(p.instrument_id, p.open_seq))
    return firsts


def _earliest_starts(states: Iterable[Snapshot]) -> dict[UUID, int]:
    """The first seq any of these users' replays (without `since`) reads, per instrument."""
    earliest: dict[UUID, int] = {}
    for state in states:
        for iid, first_open in _first_opens(state).items():
            first = state.watermark.seqs.get(iid, first_open)
            earliest[iid] = min(first, earliest.get(iid, first))
    return earliest


async def _start(
    services: Services, logs: TickLogs, state: Snapshot, since: datetime | None
) -> tuple[Watermark, dict[UUID, int], dict[UUID, Curve]]:
    """The replay's start (a seq for every held instrument), the prices and the curves there; the
    ticks after it are fetched into `logs` (docs/decisions/0040)."""
    seeds: dict[UUID, int | None] = {}
    firsts: dict[UUID, int] = {}
    for iid, first_open in _first_opens(state).items():
        seed = state.watermark.seqs.get(iid)
        if seed is None and since is not None:
            # NOTE: `since` only places the start of an instrument the user has no watermark for;
            # a watermark is never moved back (docs/decisions/0041).
            at_since = await _last_seq_at(services, iid, since)
            seed = at_since if at_since is not None and at_since >= first_open else None
        seeds[iid] = seed
        firsts[iid] = first_open if seed is None else seed
    await logs.fetch(firsts)
    starts: dict[UUID, int] = {}
    prices: dict[UUID, int] = {}
    curves: dict[UUID, Curve] = {}
    for iid, seed in seeds.items():
        if seed is None:
            starts[iid] = firsts[iid] - 1
            continue
        starts[iid] = seed
        tick = logs.tick_at(iid, seed)
        if tick is not None and tick.k_mod_micros is not None:
            curves[iid], prices[iid] = Curve.of(tick, tick.k_mod_micros), tick.price_cents
            continue
        # NOTE: only a tick written before ticks carried kMod, or the watermark's own tick lost
        # from both stores, costs a read of the instrument's current curve.
        current = await _current_curve(services, iid)
        curves[iid] = current if tick is None else Curve.of(tick, current.k_mod_micros)
        prices[iid] = tick.price_cents if tick is not None else current.price_cents
    return Watermark(starts, state.watermark.below_warning), prices, curves


async def _judge(
    services: Services,
    logs: TickLogs,
    state: Snapshot,
    since: datetime | None,
    quick: bool,
) -> tuple[Replay, int, bool]:
    """The replay of the user's ticks after his start that precede the cut's millisecond, how
    many ticks it judged, and whether it walked them one by one.

    PERF: with `quick`, a window in which no price can take the level below 100 % is settled by
    `replay_if_quiet` from each instrument's price range, without walking its ticks
    (docs/decisions/0043); the outcome is the one `replay` gives.
    """
    start, prices, curves = await _start(services, logs, state, since)
    # NOTE: ticks in or after the cut's millisecond wait for the next run, so no run ever splits
    # a millisecond and every run sees the same (at, instrument, seq) order.
    cut_ms = min(logs.cut_ms, state.cut_ms)
    if quick and cut_ms == logs.cut_ms:
        ranges = {
            iid: window
            for iid, seq in start.seqs.items()
            if (window := logs.range_after(iid, seq)) is not None
        }
        quiet = replay_if_quiet(state.balance_cents, state.positions, start, prices, ranges)
        if quiet is not None:
            return quiet, sum(window.ticks for window in ranges.values()), False
    ticks = {iid: logs.after(iid, seq, cut_ms) for iid, seq in start.seqs.items()}
    outcome = replay(state.balance_cents, state.positions, start, prices, ticks, curves)
    return outcome, sum(len(instrument_ticks) for instrument_ticks in ticks.values()), True


def _plan(user_id: UUID, version: str, outcome: Replay) -> str:
    return json.dumps(
        {
            "userId": str(user_id),
            "expect": version,
            "closes": [
                {
                    "p": str(w.position_id),
                    "x": w.price_cents,
                    "n": w.pnl_cents,
                    "i": str(w.instrument_id),
                    "q": w.seq,
                    "t": w.at_ms,
                    "e": w.equity_cents,
                    "l": w.level_basis,
                }
                for w in outcome.washouts
            ],
            "warnings": [
                {
                    "i": str(w.instrument_id),
                    "q": w.seq,
                    "t": w.at_ms,
                    "x": w.price_cents,
                    "e": w.equity_cents,
                    "l": w.level_basis,
                }
                for w in outcome.warnings
            ],
            "watermark": {
                "seqs": {str(i): s for i, s in outcome.watermark.seqs.items()},
                "below": int(outcome.watermark.below_warning),
            },
        },
        separators=(",", ":"),
    )


def _observe_washout_delays(outcome: Replay) -> None:
    committed_ms = time.time() * 1000
    for washout in outcome.washouts:
        metrics.WASHOUT_DELAY_SECONDS.observe((committed_ms - washout.at_ms) / 1000)


def _box(logs: TickLogs, state: Snapshot, outcome: Replay) -> SafeBox | None:
    """The safe box from where this replay ended, for the wallet the snapshot read; None after
    a washout (the wallet changed: the next evaluation makes one) or when none holds."""
    if outcome.washouts or not state.fingerprint:
        return None
    prices = {}
    for iid, seq in outcome.watermark.seqs.items():
        price = logs.price_at(iid, seq)
        if price is None:
            return None
        prices[iid] = price
    return safe_box(outcome.balance_cents, state.positions, outcome.watermark, prices)


async def evaluate_user(
    services: Services,
    user_id: UUID,
    *,
    since: datetime | None = None,
    logs: TickLogs | None = None,
    state: Snapshot | None = None,
    quick: bool = True,
) -> Evaluation:
    """Replay the user's ticks since his watermark and commit the outcome (SPEC §1.5); `logs`
    shares the parsed ticks of an evaluation pass over many users, `state` is his snapshot if
    the pass has read it already, and `quick=False` walks every tick even of a quiet window."""
    logs = logs or await TickLogs.begin(services)
    for _ in range(STALE_RETRIES):
        state = state or await snapshot(services, user_id)
        if state is None:
            return Evaluation(None, 0)
        outcome, judged, walked = await _judge(services, logs, state, since, quick)
        box = _box(logs, state, outcome)
        lag = WATERMARK_LAG_WALKED_TICKS if walked else WATERMARK_LAG_TICKS
        if not outcome.washouts and not outcome.warnings and judged < lag:
            # PERF: nothing happened, so the watermark may stay where it is: the next run
            # replays these ticks again from it and reaches the same outcome, and most users
            # cost no write at all.
            return Evaluation(outcome, 0, box, state.fingerprint)
        reply: list[Any] = await services.scripts.call(
            "position_system_close",
            keys=[keys.margin_watermark(user_id)],
            args=[WASHOUT, _plan(user_id, state.version, outcome)],
        )
        if reply[0] == 1:
            return Evaluation(outcome, int(reply[1]), box, state.fingerprint)
        if reply[1] == "wallet_missing":
            # NOTE: the script refused before writing anything: hot state lost the wallet since
            # the snapshot; load it and replay again.
            await wallets.load(services, user_id)
        elif reply[1] != "stale":
            raise RuntimeError(f"margin commit refused: {reply[1]} {reply[2]}")
        state = None
    log.warning("margin replay of %s lost the watermark race %d times", user_id, STALE_RETRIES)
    return Evaluation(None, 0)


async def holders_of(services: Services, instrument_ids: Iterable[UUID]) -> set[UUID]:
    """Users with open exposure on any of the instruments (the holders index)."""
    names = [keys.holders(i) for i in instrument_ids]
    if not names:
        return set()
    members: set[str] = await services.redis.sunion(names)  # type: ignore[assignment]
    return {UUID(m) for m in members}


@dataclass(frozen=True)
class Pass:
    """The outcome of one evaluation pass: positions washed out, the instruments whose prices
    those washouts moved (their trade ticks can breach other holders), and how many users it
    evaluated (a targeted pass leaves out those inside their safe boxes)."""

    closed: int
    moved: frozenset[UUID]
    evaluated: int = 0


async def evaluate_users(services: Services, user_ids: Iterable[UUID]) -> int:
    """Evaluate users in one pass; the number of positions washed out."""
    return (await evaluate_pass(services, user_ids)).closed


def box_text(fingerprint: str, box: SafeBox) -> str:
    """A safe box as keys.margin_box stores it (one string: replaced whole by one SET)."""
    held = ";".join(
        f"{iid}={h.seq}:{h.price_cents}:{h.net_lots_centis}" for iid, h in box.instruments.items()
    )
    return f"{fingerprint}|{int(box.below)}:{box.slack}:{box.headroom}|{held}"


def _parse_box(text: str) -> SafeBox | None:
    if not text:
        return None
    kind, _, held = text.partition("|")
    below, slack, headroom = kind.split(":")
    instruments = {}
    for item in held.split(";") if held else ():
        iid, _, numbers = item.partition("=")
        seq, price, net = numbers.split(":")
        instruments[UUID(iid)] = HeldInstrument(int(seq), int(price), int(net))
    return SafeBox(below == "1", int(slack), int(headroom), instruments)


async def boxes(services: Services, user_ids: Sequence[UUID]) -> list[SafeBox | None]:
    """Each user's safe box if it is still valid for his wallet."""
    reply: list[str] = await services.scripts.call(
        "margin_boxes",
        keys=[key for u in user_ids for key in (keys.wallet(u), keys.margin_box(u))],
    )
    return [_parse_box(text) for text in reply]


async def outside_boxes(services: Services, logs: TickLogs, user_ids: list[UUID]) -> list[UUID]:
    """The users some tick before the pass's cut may have moved, likeliest to breach first: no
    valid box (his wallet changed: a washout, a trade), a box the ticks since strained past its
    slack, or a box more than BOX_MAX_TICKS old on some instrument.

    NOTE: every instrument of the box counts, not only the ticked ones: the box says nothing
    happens while *all* prices stay where it allows, and a tick of another instrument may
    still wait for its own pass (docs/decisions/0046).
    """
    strained: list[tuple[float, UUID]] = []
    seqs_now: dict[UUID, int] = {}
    for at in range(0, len(user_ids), BOX_CHUNK_USERS):
        chunk = user_ids[at : at + BOX_CHUNK_USERS]
        held = await boxes(services, chunk)
        instruments = {iid for box in held if box for iid in box.instruments}
        await _read_seqs(services, instruments - seqs_now.keys(), seqs_now)
        firsts: dict[UUID, int] = {}
        for n, box in enumerate(held):
            if box is None:
                continue
            if any(seqs_now[i] - h.seq > BOX_MAX_TICKS for i, h in box.instruments.items()):
                # PERF: a lapsed box is left out before fetching: its ticks may be older than
                # the log.
                held[n] = None
                continue
            for iid, h in box.instruments.items():
                firsts[iid] = min(h.seq, firsts.get(iid, h.seq))
        await logs.fetch(firsts)
        for user_id, box in zip(chunk, held, strict=True):
            if box is None:
                strained.append((float("inf"), user_id))
                continue
            windows = {i: logs.range_after(i, h.seq) for i, h in box.instruments.items()}
            if not box.holds(windows):
                strained.append((box.strain(windows), user_id))
    strained.sort(key=lambda found: -found[0])
    return [user_id for _, user_id in strained]


async def holders_to_evaluate(services: Services, instrument_ids: Iterable[UUID]) -> list[UUID]:
    """The holders of the instruments an after-tick pass must evaluate now, likeliest to breach
    first (see outside_boxes)."""
    holders = sorted(await holders_of(services, instrument_ids), key=str)
    return await outside_boxes(services, await TickLogs.begin(services), holders)


async def _read_seqs(services: Services, instrument_ids: set[UUID], into: dict[UUID, int]) -> None:
    """The instruments' last seqs now."""
    ids = list(instrument_ids)
    if not ids:
        return
    async with services.redis.pipeline(transaction=False) as pipe:
        for iid in ids:
            pipe.hget(keys.instrument(iid), "seq")
        seqs: list[str | None] = await pipe.execute()
    into.update((iid, int(seq or 0)) for iid, seq in zip(ids, seqs, strict=True))


async def _save_boxes(services: Services, made: Sequence[tuple[UUID, Evaluation]]) -> None:
    """Replace the users' boxes.

    NOTE: one SET each, never a part of a box at a time: a slack and exposures of different
    boxes together may promise more than the wallet has.
    """
    if not made:
        return
    async with services.redis.pipeline(transaction=False) as pipe:
        for user_id, evaluation in made:
            assert evaluation.box is not None
            text = box_text(evaluation.fingerprint, evaluation.box)
            pipe.set(keys.margin_box(user_id), text, px=BOX_TTL_MS)
        await pipe.execute()


async def evaluate_pass(
    services: Services, user_ids: Iterable[UUID], *, targeted: bool = False
) -> Pass:
    """Evaluate users in one pass (see Pass); `targeted` (the after-tick passes) leaves out
    every user whose safe box still holds every tick before the pass's cut (his replay would
    find nothing) and takes the others likeliest to breach first (docs/decisions/0046).

    PERF: the pass parses each instrument's ticks once for all its users (TickLogs) and reads
    the users' snapshots a chunk per script call; a user whose replay needs no write costs no
    further round trip, and those that do commit concurrently (bounded). Between chunks it moves
    its cut on (TickLogs.advance), so later users see the washouts of earlier ones. Every
    evaluation that ends without a washout leaves a new box.
    """
    gate = asyncio.Semaphore(EVALUATION_CONCURRENCY)
    logs = await TickLogs.begin(services)
    ordered = sorted(user_ids, key=str)
    if targeted:
        ordered = await outside_boxes(services, logs, ordered)
    moved: set[UUID] = set()

    async def one(user_id: UUID, state: Snapshot) -> tuple[UUID, Evaluation]:
        async with gate:
            evaluation = await evaluate_user(services, user_id, logs=logs, state=state)
        if evaluation.closed and evaluation.replay is not None:
            moved.update(w.position_instrument_id for w in evaluation.replay.washouts)
        return user_id, evaluation

    closed = 0
    for at in range(0, len(ordered), SNAPSHOT_CHUNK_USERS):
        chunk = ordered[at : at + SNAPSHOT_CHUNK_USERS]
        if at:
            await logs.advance()
        states = await snapshots(services, chunk)
        # PERF: one fetch of the ticks the whole chunk reads, not one per user reaching further.
        await logs.fetch(_earliest_starts(s for s in states if s is not None))
        evaluations = await asyncio.gather(
            *(one(u, s) for u, s in zip(chunk, states, strict=True) if s is not None)
        )
        closed += sum(e.closed for _, e in evaluations)
        await _save_boxes(services, [(u, e) for u, e in evaluations if e.box is not None])
    return Pass(closed, frozenset(moved), len(ordered))


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


async def backstop_sweep(services: Services) -> int | None:
    """Evaluate every user with open positions under `lease:margin-backstop`; the number of users
    swept, or None when another sweep holds the lease. The lease is renewed while sweeping, and
    a sweep killed midway leaves it to expire (a rerun closes nothing twice: see evaluate_user)."""
    async with Lease(services.scripts, keys.MARGIN_BACKSTOP_LEASE, BACKSTOP_LEASE_TTL_MS) as held:
        if not held:
            return None
        users = await users_with_open_positions(services)
        # PERF: a pass per chunk shares its snapshots and parsed ticks (evaluate_pass).
        for at in range(0, len(users), BACKSTOP_CHUNK_USERS):
            await evaluate_pass(services, users[at : at + BACKSTOP_CHUNK_USERS])
        return len(users)


def _event_row(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": UUID(event["userId"]),
        "kind": event["kind"],
        "instrument_id": UUID(event["instrumentId"]),
        "seq": int(event["seq"]),
        "position_id": UUID(event["positionId"]) if "positionId" in event else None,
        "price": from_cents(int(event["priceCents"])),
        "equity": from_cents(int(event["equityCents"])),
        "margin_level": Decimal(int(event["levelBasis"])) / 100,
    }


async def drain_events(services: Services) -> list[UUID]:
    """Write the pending margin events to `margin_events`, each once, with the washout email in
    the same transaction; the ids of the email outbox rows to send.

    NOTE: a washout's row references its position, so an event whose position the flusher has
    not written yet stays in the stream for the next drain.
    """
    redis = services.redis
    entries: list[tuple[str, dict[str, str]]] = await redis.xrange(  # type: ignore[assignment]
        keys.MARGIN_OUTBOX, count=OUTBOX_BATCH_EVENTS
    )
    if not entries:
        return []
    events = [(entry_id, json.loads(fields["event"])) for entry_id, fields in entries]
    wanted = {UUID(e["positionId"]) for _, e in events if "positionId" in e}
    emails: list[UUID] = []
    async with services.engine.begin() as conn:
        present = set(
            (await conn.execute(select(CfdPosition.id).where(CfdPosition.id.in_(wanted)))).scalars()
        )
        ready = [
            (i, e) for i, e in events if "positionId" not in e or UUID(e["positionId"]) in present
        ]
        for _, event in ready:
            inserted = (
                await conn.execute(
                    insert(MarginEvent)
                    .values(_event_row(event))
                    .on_conflict_do_nothing()
                    .returning(MarginEvent.id)
                )
            ).scalar_one_or_none()
            if inserted is not None and event["kind"] == MarginEventKind.washout.value:
                outbox_id = await _washout_email(conn, event)
                if outbox_id is not None:
                    emails.append(outbox_id)
    if ready:
        await redis.xdel(keys.MARGIN_OUTBOX, *(entry_id for entry_id, _ in ready))
    return emails


async def _washout_email(conn: AsyncConnection, event: dict[str, Any]) -> UUID | None:
    """The washout notice (SPEC §5.5) for a user with an address; None for one without."""
    found = (
        await conn.execute(
            select(User.email, User.first_name, Instrument.name, CfdPosition.lot_size)
            .select_from(CfdPosition)
            .join(User, User.id == CfdPosition.user_id)
            .join(Instrument, Instrument.id == CfdPosition.instrument_id)
            .where(CfdPosition.id == UUID(event["positionId"]))
        )
    ).first()
    if found is None or not found.email:
        return None
    outbox_id: UUID = await email.enqueue(
        conn,
        to_address=found.email,
        template=WASHOUT,
        context={
            "firstName": found.first_name,
            "playerName": found.name,
            "lotSize": str(found.lot_size),
            "exitPrice": str(from_cents(int(event["priceCents"]))),
            "realizedPnl": str(from_cents(int(event["pnlCents"]))),
            "marginLevel": str(Decimal(int(event["levelBasis"])) / 100),
        },
        user_id=UUID(event["userId"]),
    )
    return outbox_id
