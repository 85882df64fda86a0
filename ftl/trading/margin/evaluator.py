"""The margin evaluator (SPEC §1.5, §5.4): load a user's state and ticks, run the pure replay
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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from ftl.core import metrics
from ftl.store import keys
from ftl.store.services import Services
from ftl.trading import wallets
from ftl.trading.margin.replay import (
    Curve,
    Replay,
    SafeBox,
    Watermark,
    replay,
    replay_if_quiet,
    safe_box,
)
from ftl.trading.margin.safe_boxes import save_boxes, still_unboxed, to_evaluate
from ftl.trading.margin.snapshots import Snapshot, parsed_id, snapshot, snapshots
from ftl.trading.margin.tick_logs import TickLogs, current_curve, last_seq_at

log = logging.getLogger(__name__)

WASHOUT = "washout"  # the close reason lua/position_system_close.lua records
STALE_RETRIES = 5  # a run that keeps losing the watermark race gives way to the next trigger
# An uneventful replay moves the watermark only past this many ticks: settled from price ranges
# (replay_if_quiet), a long window costs nothing more; walked tick by tick, it does.
WATERMARK_LAG_TICKS = 200
WATERMARK_LAG_WALKED_TICKS = 20
EVALUATION_CONCURRENCY = 16  # users committing at once in one pass (Redis runs scripts one by one)
SNAPSHOT_CHUNK_USERS = 50  # users a pass snapshots between two cuts (SNAPSHOT_POSITIONS a call)


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one user's evaluation: the replay as committed, and the closes applied
    (fewer than its washouts when some position was closed meanwhile)."""

    replay: Replay | None
    closed: int
    box: SafeBox | None = None  # for the wallet of `fingerprint`, when one holds
    fingerprint: str = ""


def _first_opens(state: Snapshot) -> dict[UUID, int]:
    """The seq of the first open of the user's positions on each instrument he holds."""
    firsts: dict[UUID, int] = {}
    for p in state.positions:
        firsts[p.instrument_id] = min(p.open_seq, firsts.get(p.instrument_id, p.open_seq))
    return firsts


def earliest_starts(states: Iterable[Snapshot]) -> dict[UUID, int]:
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
            at_since = await last_seq_at(services, iid, since)
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
        current = await current_curve(services, iid)
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
    """`ftl_margin_washout_delay_seconds`: from each washout's breach tick to now, its commit.

    NOTE: the tick's time is Redis's clock and now is this process's; both are the host's.
    """
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
            _observe_washout_delays(outcome)
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
    """Users with an open position on any of the instruments (the holders index)."""
    names = [keys.holders(i) for i in instrument_ids]
    if not names:
        return set()
    members: set[str] = await services.redis.sunion(names)  # type: ignore[assignment]
    return {parsed_id(m) for m in members}


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


async def holders_to_evaluate(services: Services, instrument_ids: Iterable[UUID]) -> list[UUID]:
    """The users an after-tick pass over the instruments must evaluate now, those whose box the
    new ticks strained first (see safe_boxes.to_evaluate)."""
    return await to_evaluate(services, instrument_ids)


async def evaluate_pass(
    services: Services, user_ids: Iterable[UUID], *, targeted: bool = False
) -> Pass:
    """Evaluate users in one pass (see Pass); `targeted` (the after-tick passes, given the users
    of holders_to_evaluate in its order) leaves out those a pass meanwhile gave a box that
    speaks for their wallet (docs/decisions/0046, 0166).

    PERF: the pass parses each instrument's ticks once for all its users (TickLogs) and reads
    the users' snapshots a chunk per script call; a user whose replay needs no write costs no
    further round trip, and those that do commit concurrently (bounded). Between chunks it moves
    its cut on (TickLogs.advance), so later users see the washouts of earlier ones. Every
    evaluation that ends without a washout leaves a new box, indexed; a user found holding
    nothing leaves the index.
    """
    gate = asyncio.Semaphore(EVALUATION_CONCURRENCY)
    if targeted:
        ordered = await still_unboxed(services, list(user_ids))
    else:
        ordered = sorted(user_ids, key=str)
    logs = await TickLogs.begin(services)
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
        await logs.fetch(earliest_starts(s for s in states if s is not None))
        evaluations = await asyncio.gather(
            *(one(u, s) for u, s in zip(chunk, states, strict=True) if s is not None)
        )
        closed += sum(e.closed for _, e in evaluations)
        made = [(u, e.fingerprint, e.box) for u, e in evaluations if e.box is not None]
        empty = [u for u, s in zip(chunk, states, strict=True) if s is None or not s.positions]
        await save_boxes(services, made, empty)
    return Pass(closed, frozenset(moved), len(ordered))
