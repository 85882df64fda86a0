"""Every way a margin replay is asked for reaches the actor and washes out: `ftl replay`,
`POST /api/admin/replay`, the after-tick evaluator (and its follow-up after washouts and after
the flusher writes trade ticks), and a `user:reconnect` publish (SPEC §1.5 triggers, §3.3, §6).
The actors run on a real Dramatiq worker against the real Redis broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from dramatiq import Worker
from falcon import testing

from ftl import cli
from ftl.market import prices, rules
from ftl.store import keys
from ftl.store.services import Services
from ftl.store.ticks import Tick, TickSource
from ftl.trading.margin import evaluator, follow_ups
from tests.integration.api_helpers import login
from tests.integration.margin_helpers import CLOCK_STEP_S, move, open_position, position
from tests.integration.trading_helpers import make_instrument, make_user
from workers import flush, margin
from workers.queues import NAMESPACE
from workers.runtime import broker as the_broker

JOIN_TIMEOUT_MS = 30_000
ONE = Decimal("1.00")
ROUTE = "/api/admin/replay"


@pytest.fixture
def margin_worker(services: Services) -> Iterator[Worker]:
    worker = Worker(the_broker(), worker_threads=1, queues={margin.QUEUE})
    worker.start()
    yield worker
    worker.stop()


async def processed(worker: Worker) -> None:
    await asyncio.to_thread(the_broker().join, margin.QUEUE, timeout=JOIN_TIMEOUT_MS)
    await asyncio.to_thread(worker.join)


async def at_risk(
    services: Services, pg: psycopg.Connection, *, boxed: bool = False
) -> tuple[UUID, UUID, UUID]:
    """A user whose one position is past the breach (80.00 against 100.00, 1,500.00 points);
    `boxed`: a pass gave him a safe box before the move, so only a pass over his instrument (or
    a replay of his own) finds the breach (docs/decisions/0166)."""
    user = make_user(pg, balance="1500.00")
    instrument = await make_instrument(services, pg, live_base_cents=10_000)
    pid = await open_position(services, user, instrument, "long", 100, 10_000)
    if boxed:
        await asyncio.sleep(CLOCK_STEP_S)
        users = await evaluator.holders_to_evaluate(services, [instrument])
        assert (await evaluator.evaluate_pass(services, users, targeted=True)).evaluated == 1
    await move(services, instrument, 8_000)
    await asyncio.sleep(CLOCK_STEP_S)
    return user, instrument, pid


async def closed_by(services: Services, pid: UUID) -> str | None:
    return (await position(services, pid)).get("closedBy")


async def test_ftl_replay_margin_and_all_enqueue_replays(
    services: Services, pg_admin: psycopg.Connection, margin_worker: Worker
) -> None:
    _, _, second = await at_risk(services, pg_admin, boxed=True)
    one, _, first = await at_risk(services, pg_admin)

    # NOTE: in a thread, as from a shell: the command runs its own event loop.
    assert await asyncio.to_thread(cli.main, ["replay", "margin", str(one)]) == 0
    await processed(margin_worker)
    assert await closed_by(services, first) == "washout"
    assert await closed_by(services, second) is None

    assert cli.main(["replay", "all"]) == 2  # --since is required for everyone
    everyone = ["replay", "all", "--since", "2026-06-11T00:00:00Z"]
    assert await asyncio.to_thread(cli.main, everyone) == 0
    await processed(margin_worker)
    assert await closed_by(services, second) == "washout"


async def test_ftl_replay_margin_of_no_user_says_so_and_enqueues_nothing(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = str(uuid4())
    assert await asyncio.to_thread(cli.main, ["replay", "margin", nobody]) == 2
    assert capsys.readouterr().err.strip() == f"replay margin: no user {nobody}"
    assert await services.redis.llen(f"{NAMESPACE}:{margin.QUEUE}") == 0


async def test_the_after_tick_evaluator_and_a_reconnect_reach_the_holders(
    services: Services, pg_admin: psycopg.Connection, margin_worker: Worker
) -> None:
    returning, _, away = await at_risk(services, pg_admin, boxed=True)
    _, instrument, ticked = await at_risk(services, pg_admin)

    margin.evaluate_instruments.send([str(instrument)])
    await processed(margin_worker)
    assert await closed_by(services, ticked) == "washout"
    assert await closed_by(services, away) is None

    listener = asyncio.create_task(margin.listen_for_reconnects(services))
    # NOTE: waiting on Redis state (the subscription, then the worker's close), not on an
    # asyncio event of this process.
    while await services.redis.pubsub_numsub(keys.USER_RECONNECT_CHANNEL) == [  # noqa: ASYNC110
        (keys.USER_RECONNECT_CHANNEL, 0)
    ]:
        await asyncio.sleep(CLOCK_STEP_S)
    await services.redis.publish(keys.USER_RECONNECT_CHANNEL, "not a user id")
    await services.redis.publish(keys.USER_RECONNECT_CHANNEL, str(returning))
    while await closed_by(services, away) is None:  # noqa: ASYNC110
        await asyncio.sleep(CLOCK_STEP_S)
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    await processed(margin_worker)
    assert await closed_by(services, away) == "washout"


async def test_a_large_batch_of_holders_is_shared_out_in_chunks(
    services: Services, pg_admin: psycopg.Connection, margin_worker: Worker
) -> None:
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000)
    held = []
    for _ in range(3):
        user = make_user(pg_admin, balance="1500.00")
        held.append(await open_position(services, user, instrument, "long", 100, 10_000))
    await move(services, instrument, 8_000)
    await asyncio.sleep(CLOCK_STEP_S)

    margin.evaluate_instruments.send([str(instrument)], chunk_users=1)
    await processed(margin_worker)
    assert [await closed_by(services, pid) for pid in held] == ["washout"] * 3


async def test_an_admin_enqueues_a_replay_and_bad_requests_change_nothing(
    api: testing.ASGIConductor,
    services: Services,
    pg_admin: psycopg.Connection,
    margin_worker: Worker,
) -> None:
    operator, admin = await login(api, "Operator")
    pg_admin.execute("UPDATE users SET role = 'admin' WHERE id = %s", (operator,))
    _, player = await login(api, "Player")
    user, _, pid = await at_risk(services, pg_admin)

    refused = [
        ({}, {"userId": str(user)}, 401, "unauthorized"),
        (player, {"userId": str(user)}, 403, "forbidden"),
        (admin, {"userId": "nope"}, 400, "validation_error"),
        (admin, {"userId": str(user), "since": "yesterday"}, 400, "validation_error"),
        (admin, {"userId": str(user), "force": True}, 400, "unknown_field"),
        (admin, {"userId": str(uuid4())}, 404, "not_found"),
    ]
    for headers, body, status, code in refused:
        result = await api.simulate_post(ROUTE, headers=headers, json=body)
        assert (result.status_code, result.json["error"]["code"]) == (status, code), body
    await processed(margin_worker)
    assert await closed_by(services, pid) is None

    since = "2026-06-11T12:00:00+00:00"
    accepted = await api.simulate_post(
        ROUTE, headers=admin, json={"userId": str(user), "since": since}
    )
    assert accepted.status_code == 202
    assert accepted.json == {"enqueued": True, "userId": str(user), "since": since}
    await processed(margin_worker)
    assert await closed_by(services, pid) == "washout"


async def test_a_washout_that_moves_the_price_into_another_breach_is_followed_up(
    services: Services, pg_admin: psycopg.Connection, margin_worker: Worker
) -> None:
    """kMod 1.00: closing 10 lots moves the price 10.00 points, which breaches a second holder
    whom the pass that made the washout had judged before that tick existed."""
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=ONE)
    big = make_user(pg_admin, balance="10500.00")
    first = await open_position(services, big, instrument, "long", 1_000, 10_000)  # at 105.00
    small = make_user(pg_admin, balance="2200.00")
    second = await open_position(services, small, instrument, "long", 100, 11_000)  # at 110.50
    await move(services, instrument, 8_800)  # price 99.00: big at 42.9 %, small at 95.0 %
    await asyncio.sleep(CLOCK_STEP_S)

    margin.evaluate_instruments.send([str(instrument)])
    await processed(margin_worker)

    closed = [await position(services, pid) for pid in (first, second)]
    assert [(p["closedBy"], p["exitCents"]) for p in closed] == [
        # sells 10 lots along the curve from netLots 11: 88.00 + 1.00 × (11 − 5)
        ("washout", "9400"),
        # breached by the first washout's own tick (89.00); sells 1 lot from netLots 1
        ("washout", "8850"),
    ]
    assert await services.redis.exists(keys.MARGIN_WASHOUT_FOLLOW_UP) == 0


async def last_tick(services: Services, instrument: UUID) -> Tick:
    logged: list[str] = await services.redis.zrange(keys.tick_log(instrument), -1, -1)  # type: ignore[assignment]
    return Tick.from_json(logged[0])


async def test_a_holder_breached_by_another_users_trade_is_washed_out_after_the_flush(
    services: Services, pg_admin: psycopg.Connection, margin_worker: Worker
) -> None:
    """kMod 1.00: a 25-lot short open moves the price 25.00 points down through netLots, past
    the breach of a 1-lot long, with no live tick and no sweep."""
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=ONE)
    holder = make_user(pg_admin, balance="1500.00")
    held = await open_position(services, holder, instrument, "long", 100, 10_000)  # price 101
    seller = make_user(pg_admin, balance="100000.00")
    await open_position(services, seller, instrument, "short", 2_500, 8_850)  # its fill
    breach = await last_tick(services, instrument)
    assert (breach.source, breach.price_cents) == (TickSource.TRADE, 7_600)
    await asyncio.sleep(CLOCK_STEP_S)
    await processed(margin_worker)
    assert await closed_by(services, held) is None  # a trade alone asks for no pass

    await flush.build(services, consumer="test").flush()
    await processed(margin_worker)

    closed = await position(services, held)
    # the breach tick decides when; its curve the price: selling 1 lot from its netLots
    assert breach.k_mod_micros is not None
    fill = rules.fill_cents(
        breach.live_base_price_cents, breach.k_mod_micros, breach.net_lots_centis, 100, rules.SHORT
    )
    assert (closed["closedBy"], closed["exitCents"]) == ("washout", str(fill))


def margin_messages() -> list[dict[str, Any]]:
    """Messages waiting on the margin queue, and on its delay queue (the flusher's asks)."""
    queued = [
        *the_broker().client.hvals(f"{the_broker().namespace}:{margin.QUEUE}.msgs"),
        *the_broker().client.hvals(f"{the_broker().namespace}:{margin.QUEUE}.DQ.msgs"),
    ]
    return [json.loads(m) for m in queued]


async def test_many_trades_on_many_instruments_ask_for_one_pending_pass(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """No worker runs: the trade pass asked for stays queued, one in all until it starts
    (decisions 0047, 0160): before, each instrument owed its own, and traders holding many
    instruments were replayed by several passes a second, racing each other."""
    instruments = [await make_instrument(services, pg_admin) for _ in range(2)]
    flusher = flush.build(services, consumer="test")
    for instrument in instruments:
        await prices.apply_base_price(services, instrument, 10_100, TickSource.LIVE)
    await flusher.flush()
    assert margin_messages() == []  # the poller asks for live batches itself

    for n in range(4):
        user = make_user(pg_admin)
        await open_position(services, user, instruments[n % 2], "long", 100 + n, 10_100)
        await flusher.flush()  # a batch each, on either instrument
    asked = margin_messages()
    assert [(m["actor_name"], m["args"]) for m in asked] == [("evaluate_traded", [])]
    # NOTE: sent a second late, so one pass covers every trade of that second (decision 0047).
    (message,) = asked
    # NOTE: eta counts from the enqueue, the timestamp from the message's making just before it
    # (the same millisecond, or the next ones on a busy machine).
    late_ms = message["options"]["eta"] - message["message_timestamp"]
    delay_ms = follow_ups.TRADE_FOLLOW_UP_DELAY_MS
    assert delay_ms <= late_ms < 2 * delay_ms
    # The pass starts: it takes both instruments; the next trade owes the next pass.
    assert await follow_ups.take(services, follow_ups.TRADES) == sorted(instruments, key=str)
    await open_position(services, make_user(pg_admin), instruments[0], "short", 100, 10_100)
    await flusher.flush()
    assert len(margin_messages()) == 2


async def test_a_washouts_own_tick_asks_the_flusher_for_no_trade_pass(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """Decision 0164: the pass that made a washout sends its follow-up itself (0044); the
    flusher's trade pass would box-check every holder of the instrument again. A user's trade in
    the same batch still asks for one. No worker runs: the asks stay queued."""
    user, instrument, pid = await at_risk(services, pg_admin)
    flusher = flush.build(services, consumer="test")
    await flusher.flush()  # the open's own trade tick: one trade pass owed
    assert await follow_ups.take(services, follow_ups.TRADES) == [instrument]  # that pass starts
    the_broker().flush_all()

    await evaluator.evaluate_user(services, user)  # the washout, as the worker makes it
    assert await closed_by(services, pid) == "washout"
    await flusher.flush()

    assert margin_messages() == []
    await open_position(services, make_user(pg_admin), instrument, "long", 100, 8_000)
    await flusher.flush()
    assert [m["actor_name"] for m in margin_messages()] == ["evaluate_traded"]
