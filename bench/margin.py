"""The margin evaluator in a simulated live match (SPEC §8: washout < 3 s after the breach tick).

USERS users hold 3 positions each on the 22 players of one live match. Every 2 s a batch of
ticks moves every player's live base price (a random walk with a downward drift, so margin
levels fall and washouts happen); after each batch the after-tick evaluator runs over the holders
of the ticked instruments, shared between PROCESSES worker processes as `evaluate_instruments`
shares them out with `evaluate_holders` messages; then, until no washout moves a price, a
follow-up pass over the holders of the instruments the washouts moved (as `follow_up` sends
them; `--no-follow-up` leaves them to the next batch, as before docs/decisions/0044). Like the
actors, passes replay only the holders whose safe box the ticks may have left
(docs/decisions/0046; `--no-boxes` replays every holder, as before).

Prints one JSON object: user evaluations per second of evaluator time (wall) and per CPU second
of the evaluator processes (what a shared machine distorts least), the evaluator's time per
batch, and the washout delay (breach tick `at` to the close's `closedAtMs`, both Redis time)
p50/p99/max in ms. Washouts breached before kick-off by the opens' trade ticks are only counted:
setup does not run the flusher's passes after trade ticks (docs/decisions/0045), so it evaluates
them all at once just before kick-off.

    python -m bench.margin [--users 10000] [--batches 20] [--processes 2] [--no-follow-up] \
        [--no-boxes] --flush-db

Needs REDIS_URL pointing at a SCRATCH Redis database (it is flushed with --flush-db; wallets are
made directly in Redis, so Postgres is not touched).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from uuid import UUID

from ftl.core.config import get_settings
from ftl.core.errors import Conflict
from ftl.market import instruments, prices, rules
from ftl.market.instruments import InstrumentState
from ftl.store import keys
from ftl.store.services import Services
from ftl.store.ticks import TickSource
from ftl.trading import trades
from ftl.trading.margin import evaluator

PLAYERS = 22
POSITIONS_PER_USER = 3
FIRST_IDX = 64_001
BATCH_INTERVAL_S = 2.0
START_PRICE_CENTS = 10_000
OPENS_IN_FLIGHT = 64
BALANCE_CENTS = 1_000_000  # 10,000.00 points, a new wallet


def wallet_fields() -> dict[str, str]:
    return {
        "balanceCents": str(BALANCE_CENTS),
        "realizedCents": "0",
        "bonusCents": "0",
        "usedMarginCents": "0",
        "costCents": "0",
        "openCount": "0",
        "version": "0",
        "districtId": "1",
        "paidReferrals": "0",
    }


def _uuid(rng: random.Random) -> UUID:
    """An id from the seeded generator: the same seed, the same users in the same order."""
    return UUID(int=rng.getrandbits(128), version=4)


async def setup(
    services: Services, users: int, rng: random.Random
) -> tuple[list[UUID], list[UUID], int]:
    """The users, the players, and how many opens were refused."""
    players = []
    for n in range(PLAYERS):
        state = InstrumentState(
            id=_uuid(rng),
            idx=FIRST_IDX + n,
            sportmonks_player_id=FIRST_IDX + n,
            name=f"Bench player {n}",
            team="BEN",
            position="MID",
            form_index=Decimal(0),
            base_price_cents=START_PRICE_CENTS,
            live_base_price_cents=START_PRICE_CENTS,
            k_mod_micros=50_000,
            net_lots_centis=0,
            seq=0,
            is_active=True,
            frozen=False,
            degraded=False,
        )
        players.append(state)
    await instruments.load_missing(services.redis, players)
    user_ids = [_uuid(rng) for _ in range(users)]
    async with services.redis.pipeline(transaction=False) as pipe:
        for user_id in user_ids:
            pipe.hset(keys.wallet(user_id), mapping=wallet_fields())  # type: ignore[arg-type]
        await pipe.execute()
    gate = asyncio.Semaphore(OPENS_IN_FLIGHT)
    refused: list[trades.OpenOrder] = []

    async def open_three(user_id: UUID) -> None:
        # NOTE: one gate slot per user, reads included, so 10,000 users never wait on more
        # connections than the pool lends.
        async with gate:
            for n, player in enumerate(rng.sample(players, POSITIONS_PER_USER)):
                state = await instruments.read(services.redis, player.id)
                assert state is not None
                price = rules.price_cents(
                    state.live_base_price_cents, state.k_mod_micros, state.net_lots_centis
                )
                # NOTE: 6-9 lots in all: about 60-90 % of the balance locked as margin.
                order = trades.OpenOrder(
                    instrument_id=player.id,
                    direction=rng.choice([rules.LONG, rules.SHORT]),
                    lots_centis=rng.randint(200, 300),
                    client_request_id=f"bench-{n}",
                    client_price_cents=price,
                    tolerance_ppm=rules.SLIPPAGE_TOLERANCE_MAX_PPM,
                    stop_loss_cents=None,
                    take_profit_cents=None,
                )
                try:
                    await trades.open_position(services, trades.Caller(user_id, "bench"), order)
                except Conflict:
                    refused.append(order)  # NOTE: the price ran past the tolerance meanwhile
            # NOTE: opens are trade ticks, evaluated as they happen before kick-off: not measured.
            await evaluator.evaluate_user(services, user_id)

    await asyncio.gather(*(open_three(u) for u in user_ids))
    return user_ids, [p.id for p in players], len(refused)


# An evaluator process's own event loop and adapters, kept for all its shares as a worker keeps
# them for all its messages (workers/runtime.py, docs/decisions/0047).
_evaluator: tuple[asyncio.AbstractEventLoop, Services] | None = None


def evaluate_share(user_ids: list[UUID], targeted: bool) -> tuple[float, evaluator.Pass]:
    """One worker process's share of an after-tick evaluation: the CPU seconds it took (on a
    shared machine the wall time also counts other processes' turns), and its outcome."""
    global _evaluator
    if _evaluator is None:
        _evaluator = (asyncio.new_event_loop(), Services.create(get_settings()))
    loop, services = _evaluator
    started = time.process_time()
    outcome = loop.run_until_complete(
        evaluator.evaluate_pass(services, user_ids, targeted=targeted)
    )
    return time.process_time() - started, outcome


async def evaluate_holders(
    services: Services,
    instrument_ids: Iterable[UUID],
    pool: list[ProcessPoolExecutor],
    targeted: bool,
) -> tuple[int, int, float, frozenset[UUID]]:
    """One pass over the holders of the instruments, shared out over the worker processes as
    `evaluate_holders` messages would be: holders, users replayed (outside their safe boxes),
    CPU seconds, instruments moved."""
    instrument_ids = list(instrument_ids)
    holders = await evaluator.holders_of(services, instrument_ids)
    ordered = sorted(holders, key=str)
    if targeted:  # as the worker's after-tick passes: those the index says (decision 0166)
        ordered = await evaluator.holders_to_evaluate(services, instrument_ids)
    shares = [ordered[n :: len(pool)] for n in range(len(pool))]
    done = await asyncio.gather(
        *(
            asyncio.wrap_future(f.submit(evaluate_share, share, targeted))
            for f, share in zip(pool, shares, strict=True)
        )
    )
    return (
        len(holders),
        sum(outcome.evaluated for _, outcome in done),
        sum(cpu for cpu, _ in done),
        frozenset().union(*(outcome.moved for _, outcome in done)),
    )


async def run(
    users: int,
    batches: int,
    seed: int,
    pool: list[ProcessPoolExecutor],
    follow_up: bool,
    targeted: bool,
) -> dict[str, object]:
    rng = random.Random(seed)
    services = Services.create(get_settings())
    await services.scripts.load()
    try:
        _, players, refused = await setup(services, users, rng)
        # NOTE: the flusher's passes after the opens' trade ticks (docs/decisions/0045), which
        # setup does not run, done at once before kick-off: not measured.
        moved = frozenset(players)
        while moved:
            *_, moved = await evaluate_holders(services, moved, pool, targeted)
        seconds, micros = await services.redis.time()
        kick_off_ms = seconds * 1000 + micros // 1000
        live = dict.fromkeys(players, START_PRICE_CENTS)
        evaluated = replayed = 0
        evaluator_s: list[float] = []
        cpu_s = 0.0
        follow_ups = 0
        for _ in range(batches):
            started = time.monotonic()
            for player in players:
                step = rng.randint(-300, 200)  # cents: a drift down for longs, up for shorts
                if rng.random() < 0.5:
                    step = -step
                live[player] = max(rules.PRICE_FLOOR_CENTS, live[player] + step)
                await prices.apply_base_price(services, player, live[player], TickSource.LIVE)
            await asyncio.sleep(0.002)  # NOTE: the replay defers ticks of the cut's millisecond
            evaluation_started = time.monotonic()
            count, outside, cpu, moved = await evaluate_holders(services, players, pool, targeted)
            while True:
                evaluated += count
                replayed += outside
                cpu_s += cpu
                if not moved or not follow_up:
                    break
                # NOTE: washouts' trade ticks are followed up at once, as `follow_up` does.
                count, outside, cpu, moved = await evaluate_holders(services, moved, pool, targeted)
                follow_ups += 1
            evaluator_s.append(time.monotonic() - evaluation_started)
            await asyncio.sleep(max(0.0, BATCH_INTERVAL_S - (time.monotonic() - started)))
        delays, before_kick_off = await washout_delays_ms(services, kick_off_ms)
    finally:
        await services.close()
    quantiles = (
        statistics.quantiles(delays, n=100, method="inclusive") if len(delays) >= 2 else delays * 99
    )
    return {
        "bench": "margin",
        "users": users,
        "evaluator_processes": len(pool),
        "positions": users * POSITIONS_PER_USER - refused,
        "batches": batches,
        "evaluations": evaluated,
        "replayed_outside_boxes": replayed,
        "follow_up_passes": follow_ups,
        "evaluations_per_s": round(evaluated / sum(evaluator_s), 1),
        "evaluations_per_cpu_s": round(evaluated / cpu_s, 1),
        "evaluator_s_per_batch_p50": round(statistics.median(evaluator_s), 3),
        "evaluator_s_per_batch_max": round(max(evaluator_s), 3),
        "washouts": len(delays),
        "washouts_before_kick_off": before_kick_off,
        "washout_delay_ms_p50": round(statistics.median(delays), 1) if delays else None,
        "washout_delay_ms_p99": round(quantiles[98], 1) if delays else None,
        "washout_delay_ms_max": max(delays) if delays else None,
    }


async def washout_delays_ms(services: Services, kick_off_ms: int) -> tuple[list[int], int]:
    """Breach tick to close, for every washout the margin outbox recorded with its breach at or
    after kick-off; and how many breached before it (opens' trade ticks, not simulated live)."""
    entries: list[tuple[str, dict[str, str]]] = await services.redis.xrange(keys.MARGIN_OUTBOX)  # type: ignore[assignment]
    delays = []
    before_kick_off = 0
    for _, fields in entries:
        event = json.loads(fields["event"])
        if event["kind"] == "washout" and int(event["atMs"]) < kick_off_ms:
            before_kick_off += 1
        elif event["kind"] == "washout":
            position = keys.position(event["positionId"])
            closed_at: str = await services.redis.hget(position, "closedAtMs")  # type: ignore[assignment]
            delays.append(int(closed_at) - int(event["atMs"]))
    return delays, before_kick_off


async def flush_db() -> None:
    services = Services.create(get_settings())
    await services.redis.flushdb()
    await services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--processes", type=int, default=2, help="evaluator worker processes")
    parser.add_argument(
        "--no-follow-up", action="store_true", help="leave washouts' ticks to the next batch"
    )
    parser.add_argument(
        "--no-boxes", action="store_true", help="replay every holder (no safe boxes, before 0046)"
    )
    parser.add_argument("--flush-db", action="store_true", help="FLUSHDB the scratch Redis first")
    args = parser.parse_args()
    if args.flush_db:
        asyncio.run(flush_db())
    spawn = multiprocessing.get_context("spawn")
    pool = [ProcessPoolExecutor(1, mp_context=spawn) for _ in range(args.processes)]
    try:
        print(
            json.dumps(
                asyncio.run(
                    run(
                        args.users,
                        args.batches,
                        args.seed,
                        pool,
                        not args.no_follow_up,
                        not args.no_boxes,
                    )
                )
            )
        )
    finally:
        for process in pool:
            process.shutdown()


if __name__ == "__main__":
    main()
