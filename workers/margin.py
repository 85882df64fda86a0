"""The `margin` queue (SPEC §5.4): the honest replay of one user, the after-tick evaluator of the
holders of ticked instruments, the 5-minute backstop sweep, and the reconnect listener.

Every actor ends by draining the margin events it produced into Postgres and sending the washout
emails (ftl/trading/margin/outbox.py). All of them are safe to run twice or at once: a replay
commits only against the watermark it read, and a position already closed is never closed again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime

import dramatiq

from ftl.store import keys
from ftl.store.services import Services
from ftl.trading.margin import backstop, evaluator, follow_ups, outbox
from workers import runtime
from workers.email import send_email
from workers.runtime import services
from workers.schedule import MARGIN_BACKSTOP_PERIOD_MS

runtime.broker()  # NOTE: the actors below declare themselves on it

log = logging.getLogger(__name__)

QUEUE = "margin"
# NOTE: an evaluation message older than this is dropped: a newer tick batch, the reconnect or the
# backstop sweep replays the same ticks anyway (the replay starts from the watermark, not the
# message).
EVALUATE_MAX_AGE_MS = 60_000
REPLAY_MAX_AGE_MS = 3600 * 1000
EVALUATE_CHUNK_USERS = 1_000  # holders one after-tick message evaluates itself
SWEEP_MAX_AGE_MS = MARGIN_BACKSTOP_PERIOD_MS
TIME_LIMIT_MS = 120_000
SWEEP_TIME_LIMIT_MS = MARGIN_BACKSTOP_PERIOD_MS


async def _drain_and_mail(services: Services) -> None:
    for outbox_id in await outbox.drain_events(services):
        await runtime.enqueue(send_email, str(outbox_id))


async def follow_up(services: Services, moved: Iterable[uuid.UUID]) -> None:
    """Washouts' trade ticks can breach other holders of those instruments: the one follow-up
    pass, sent at once, covers every instrument washouts moved until it starts (docs/decisions
    0044, 0165)."""
    if await follow_ups.owe(services, follow_ups.WASHOUTS, moved):
        await runtime.enqueue(evaluate_follow_up)


async def follow_up_trades(services: Services, traded: Iterable[uuid.UUID]) -> None:
    """The flusher's ask after a batch with trade ticks (its `after_ticks`): the one trade pass,
    TRADE_FOLLOW_UP_DELAY_MS late, covers every instrument traded until it starts
    (docs/decisions/0045, 0047, 0160)."""
    if await follow_ups.owe(services, follow_ups.TRADES, traded):
        await runtime.enqueue(evaluate_traded, delay=follow_ups.TRADE_FOLLOW_UP_DELAY_MS)


@dramatiq.actor(queue_name=QUEUE, max_age=REPLAY_MAX_AGE_MS, time_limit=TIME_LIMIT_MS)
async def replay_user(user_id: str, since: str | None = None) -> None:
    """Replay one user's ticks since his watermark; `since` (ISO-8601) places the start of the
    instruments he has no watermark for (docs/decisions/0041)."""
    start = datetime.fromisoformat(since) if since else None
    async with services() as svc:
        evaluation = await evaluator.evaluate_user(svc, uuid.UUID(user_id), since=start)
        if evaluation.closed and evaluation.replay is not None:
            await follow_up(svc, (w.position_instrument_id for w in evaluation.replay.washouts))
        await _drain_and_mail(svc)


@dramatiq.actor(queue_name=QUEUE, max_age=EVALUATE_MAX_AGE_MS, time_limit=TIME_LIMIT_MS)
async def evaluate_instruments(
    instrument_ids: list[str], chunk_users: int = EVALUATE_CHUNK_USERS
) -> None:
    """After a batch of ticks (or washouts' trade ticks): evaluate every holder of the ticked
    instruments whose safe box the ticks may have strained past its slack, likeliest to breach
    first (docs/decisions/0046). Those beyond the first `chunk_users` go out as
    `evaluate_holders` messages, so every worker process shares the batch (docs/benchmarks.md);
    each share checks its users' boxes again at its own cut."""
    async with services() as svc:
        await _evaluate_instruments(svc, [uuid.UUID(i) for i in instrument_ids], chunk_users)


@dramatiq.actor(queue_name=QUEUE, max_age=EVALUATE_MAX_AGE_MS, time_limit=TIME_LIMIT_MS)
async def evaluate_follow_up() -> None:
    """The washouts' follow-up pass (docs/decisions/0044, 0165): evaluate_instruments over every
    instrument washouts moved since it was asked for."""
    await _take_and_evaluate(follow_ups.WASHOUTS)


@dramatiq.actor(queue_name=QUEUE, max_age=EVALUATE_MAX_AGE_MS, time_limit=TIME_LIMIT_MS)
async def evaluate_traded() -> None:
    """The trade pass (docs/decisions/0160): evaluate_instruments over every instrument the
    flushed trades moved since it was asked for."""
    await _take_and_evaluate(follow_ups.TRADES)


async def _take_and_evaluate(kind: follow_ups.Kind) -> None:
    # NOTE: a lost message leaves its mark to lapse; the next ask sends a new pass, which takes
    # the instruments this one left.
    async with services() as svc:
        ids = await follow_ups.take(svc, kind)
        if ids:
            await _evaluate_instruments(svc, ids, EVALUATE_CHUNK_USERS)


async def _evaluate_instruments(svc: Services, ids: list[uuid.UUID], chunk_users: int) -> None:
    holders = [str(u) for u in await evaluator.holders_to_evaluate(svc, ids)]
    chunks = [holders[at : at + chunk_users] for at in range(0, len(holders), chunk_users)]
    for chunk in chunks[1:]:
        await runtime.enqueue(evaluate_holders, chunk)
    outcome = await evaluator.evaluate_pass(
        svc, (uuid.UUID(u) for u in holders[:chunk_users]), targeted=True
    )
    await follow_up(svc, outcome.moved)
    await _drain_and_mail(svc)


@dramatiq.actor(queue_name=QUEUE, max_age=EVALUATE_MAX_AGE_MS, time_limit=TIME_LIMIT_MS)
async def evaluate_holders(user_ids: list[str]) -> None:
    """One share of an after-tick evaluation."""
    async with services() as svc:
        outcome = await evaluator.evaluate_pass(
            svc, (uuid.UUID(u) for u in user_ids), targeted=True
        )
        await follow_up(svc, outcome.moved)
        await _drain_and_mail(svc)


@dramatiq.actor(
    queue_name=QUEUE, max_age=SWEEP_MAX_AGE_MS, time_limit=SWEEP_TIME_LIMIT_MS, max_retries=0
)
async def backstop_sweep() -> None:
    # NOTE: no retries: the clock sends the next sweep in 5 minutes.
    async with services() as svc:
        swept = await backstop.backstop_sweep(svc)
        if swept is None:
            log.info("margin backstop: another sweep holds the lease; skipped")
        await _drain_and_mail(svc)


LISTEN_POLL_S = 1.0  # how soon a stopped listener notices


async def listen_for_reconnects(
    svc: Services,
    enqueue: Callable[[str], object] = replay_user.send,
    running: Callable[[], bool] = lambda: True,
) -> None:
    """While `running()`: each user id published on `user:reconnect` (SPEC §7) enqueues his
    replay (the clock runs this and enqueues only while it holds its lease)."""
    pubsub = svc.redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.USER_RECONNECT_CHANNEL)
    try:
        while running():
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=LISTEN_POLL_S
            )
            if message is None:
                continue
            try:
                user_id = str(uuid.UUID(str(message["data"])))
            except ValueError:
                log.warning("user:reconnect carried %r, not a user id", message["data"])
                continue
            await asyncio.to_thread(enqueue, user_id)
    finally:
        await pubsub.aclose()
