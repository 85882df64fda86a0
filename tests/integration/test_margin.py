"""The margin replay against real Redis and Postgres (SPEC §1.5, §5.4): washouts at the breach
tick's price through `position_system_close.lua`, events and emails exactly once, reruns and
concurrent runs that close nothing twice, the holders index, and the backstop sweep's lease."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import psycopg
import pytest

from ftl.market import rules
from ftl.store import keys
from ftl.store.services import Services
from ftl.trading.margin import backstop, evaluator, follow_ups, outbox, snapshots
from tests.integration.fills_helpers import Trader
from tests.integration.margin_helpers import (
    CLOCK_STEP_S,
    balance,
    evaluate,
    margin_events,
    move,
    open_position,
    persist,
    position,
)
from tests.integration.trading_helpers import make_instrument, make_user

FLAT = Decimal(0)  # kMod 0: the worked cases' prices are exactly the live base prices


async def one_position_at_risk(
    services: Services, pg: psycopg.Connection
) -> tuple[UUID, UUID, UUID]:
    """1,500.00 points and a long lot at 100.00 (margin 1,000.00): 50 % at 90.00."""
    user = make_user(pg, balance="1500.00")
    instrument = await make_instrument(services, pg, live_base_cents=10_000, k_mod=FLAT)
    pid = await open_position(services, user, instrument, "long", 100, 10_000)
    return user, instrument, pid


async def test_a_washout_closes_at_the_breach_tick_price_even_after_a_recovery(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user, instrument, pid = await one_position_at_risk(services, pg_admin)
    pg_admin.execute("UPDATE users SET email = 'fan@example.com' WHERE id = %s", (user,))
    frames = services.redis.pubsub()
    await frames.subscribe(keys.portfolio_channel(user))
    await move(services, instrument, 9_500)  # 100 %: neither a warning nor a breach
    breach = await move(services, instrument, 9_000)  # 50 %: a breach
    await move(services, instrument, 11_000)  # recovered before anyone looked

    outcome = await evaluate(services, user)

    assert outcome.closed == 1
    closed = await position(services, pid)
    assert (closed["status"], closed["closedBy"], closed["exitCents"], closed["pnlCents"]) == (
        "closed",
        "washout",
        "9000",
        "-100000",
    )
    wallet = await services.redis.hgetall(keys.wallet(user))
    assert (wallet["balanceCents"], wallet["usedMarginCents"]) == ("50000", "0")
    assert not await services.redis.sismember(keys.holders(instrument), str(user))

    received = []
    for _ in range(20):  # the subscribe confirmation, then the frames
        message = await frames.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            received.append(json.loads(message["data"]))
        if len(received) == 2:
            break
    await frames.aclose()
    assert [f["event"] for f in received] == ["margin_warning", "washout"]
    assert received[1]["position"]["exitPrice"] == 90 and received[1]["wallet"]["balance"] == 500

    await persist(services)
    assert margin_events(pg_admin, user) == [
        (
            "warning",
            instrument,
            breach,
            None,
            Decimal("90.00"),
            Decimal("500.00"),
            Decimal("50.00"),
        ),
        ("washout", instrument, breach, pid, Decimal("90.00"), Decimal("500.00"), Decimal("50.00")),
    ]
    mail = pg_admin.execute(
        "SELECT to_address, template, context FROM email_outbox WHERE user_id = %s", (user,)
    ).fetchall()
    assert [(m[0], m[1], m[2]["exitPrice"], m[2]["realizedPnl"]) for m in mail] == [
        ("fan@example.com", "washout", "90.00", "-1000.00")
    ]
    await persist(services)
    assert balance(pg_admin, user) == Decimal("500.00")


async def test_reruns_and_concurrent_runs_close_nothing_twice(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user, instrument, _ = await one_position_at_risk(services, pg_admin)
    await move(services, instrument, 8_000)
    await asyncio.sleep(CLOCK_STEP_S)

    runs = await asyncio.gather(*(evaluator.evaluate_user(services, user) for _ in range(4)))
    rerun = await evaluate(services, user)

    assert sorted(r.closed for r in runs) == [0, 0, 0, 1]
    assert rerun.closed == 0
    seq = await services.redis.hget(keys.instrument(instrument), "seq")
    assert seq == "3"  # the open, the price, one washout close: nothing else
    wallet = await services.redis.hgetall(keys.wallet(user))
    assert wallet["balanceCents"] == str(150_000 - 200_000)
    await persist(services)
    await persist(services)
    kinds = [row[0] for row in margin_events(pg_admin, user)]
    assert kinds == ["warning", "washout"]


async def test_a_plan_read_before_another_run_committed_is_refused_as_stale(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user, instrument, pid = await one_position_at_risk(services, pg_admin)
    await move(services, instrument, 8_000)
    await asyncio.sleep(CLOCK_STEP_S)
    state = await snapshots.snapshot(services, user)
    assert state is not None
    await evaluator.evaluate_user(services, user)  # another worker commits first

    plan = json.dumps(
        {
            "userId": str(user),
            "expect": state.version,
            "closes": [{"p": str(pid), "x": 1, "n": 0, "i": str(instrument), "q": 2, "t": 0}],
            "warnings": [],
            "watermark": {"seqs": {}, "below": 0},
        }
    )
    reply = await services.scripts.call(
        "position_system_close", keys=[keys.margin_watermark(user)], args=["washout", plan]
    )

    assert reply[0] == 0 and reply[1] == "stale"
    assert (await position(services, pid))["exitCents"] == "8000"


async def test_killed_after_the_commit_the_rerun_writes_each_event_once(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """The worker dies after the Lua commit and before the events reach Postgres: they wait in
    the margin outbox, and the next run of anything margin writes them once."""
    user, instrument, _ = await one_position_at_risk(services, pg_admin)
    pg_admin.execute("UPDATE users SET email = 'fan@example.com' WHERE id = %s", (user,))
    await move(services, instrument, 8_000)
    await evaluate(services, user)
    assert await services.redis.xlen(keys.MARGIN_OUTBOX) == 2

    assert (await evaluate(services, user)).closed == 0
    await persist(services)
    await persist(services)

    assert [row[0] for row in margin_events(pg_admin, user)] == ["warning", "washout"]
    mails = pg_admin.execute("SELECT count(*) FROM email_outbox WHERE user_id = %s", (user,))
    assert mails.fetchone() == (1,)
    assert await services.redis.xlen(keys.MARGIN_OUTBOX) == 0


async def test_an_event_waits_until_the_flusher_wrote_its_position(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user, instrument, _ = await one_position_at_risk(services, pg_admin)
    await move(services, instrument, 8_000)
    await evaluate(services, user)

    await outbox.drain_events(services)  # the position is not in Postgres yet
    assert [row[0] for row in margin_events(pg_admin, user)] == ["warning"]
    await persist(services)
    assert [row[0] for row in margin_events(pg_admin, user)] == ["warning", "washout"]


async def test_no_positions_means_nothing_to_evaluate(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user, instrument, _ = await one_position_at_risk(services, pg_admin)
    await services.redis.delete(keys.open_positions(user))
    await move(services, instrument, 1_000)
    outcome = await evaluate(services, user)
    assert outcome.closed == 0 and outcome.replay is not None
    assert outcome.replay.washouts == () and outcome.replay.warnings == ()
    stranger = make_user(pg_admin)
    assert await evaluator.evaluate_user(services, stranger) == evaluator.Evaluation(None, 0)


async def test_the_holders_index_follows_exposure(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user, instrument, _ = await one_position_at_risk(services, pg_admin)
    other = await make_instrument(services, pg_admin, k_mod=FLAT)
    assert await evaluator.holders_of(services, [instrument, other]) == {user}
    second = await open_position(services, user, instrument, "long", 10, 10_000)
    await move(services, instrument, 8_000)
    await evaluate(services, user)  # both positions on the instrument wash out
    assert (await position(services, second))["closedBy"] == "washout"
    assert await evaluator.holders_of(services, [instrument, other]) == set()
    assert await evaluator.holders_of(services, []) == set()


async def test_a_holder_stays_one_until_his_last_position_on_the_instrument_closes(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """The index follows how many of his positions are open, never his net lots: a close that
    leaves net zero with positions still open keeps him (full time must close them), his last
    close drops him; a wallet loaded from Postgres counts its positions again
    (docs/decisions/0094)."""
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    me = Trader(services, make_user(pg_admin), instrument)
    user = me.caller.user_id
    opened = [await me.open(side, 100) for side in (rules.LONG, rules.SHORT, rules.LONG)]
    first_long, short, second_long = (p["id"] for p in opened if p is not None)
    assert await services.redis.hgetall(keys.held(user)) == {str(instrument): "3"}

    assert await me.close(first_long)
    assert await services.redis.hget(keys.exposure(user), str(instrument)) is None, "net zero"
    assert await evaluator.holders_of(services, [instrument]) == {user}

    # Redis lost his wallet, his counts and his place in the index: his next trade loads them.
    await persist(services)
    await services.redis.delete(keys.wallet(user), keys.held(user))
    await services.redis.srem(keys.holders(instrument), str(user))
    assert await me.close(short)
    assert await services.redis.hgetall(keys.held(user)) == {str(instrument): "1"}
    assert await evaluator.holders_of(services, [instrument]) == {user}

    assert await me.close(second_long)
    assert await services.redis.hgetall(keys.held(user)) == {}
    assert await evaluator.holders_of(services, [instrument]) == set()


async def test_the_full_time_close_closes_at_the_given_price_once(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    _, _, pid = await one_position_at_risk(services, pg_admin)
    plan = json.dumps({"closes": [{"p": str(pid), "x": 10_250}]})
    first = await services.scripts.call(
        "position_system_close", keys=["margin:unused"], args=["auto_exit_ft", plan]
    )
    again = await services.scripts.call(
        "position_system_close", keys=["margin:unused"], args=["auto_exit_ft", plan]
    )
    assert (first[0], first[1], again[0], again[1]) == (1, 1, 1, 0)
    closed = await position(services, pid)
    assert (closed["closedBy"], closed["exitCents"], closed["pnlCents"]) == (
        "auto_exit_ft",
        "10250",
        "25000",
    )
    assert await services.redis.xlen(keys.MARGIN_OUTBOX) == 0


async def users_at_risk(services: Services, pg: psycopg.Connection, count: int) -> list[UUID]:
    instrument = await make_instrument(services, pg, live_base_cents=10_000, k_mod=FLAT)
    users = []
    for _ in range(count):
        user = make_user(pg, balance="1500.00")
        await open_position(services, user, instrument, "long", 100, 10_000)
        users.append(user)
    await move(services, instrument, 8_000)
    await asyncio.sleep(CLOCK_STEP_S)
    return users


async def test_two_sweeps_started_at_once_one_runs_the_other_skips(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    users = await users_at_risk(services, pg_admin, 3)
    swept = await asyncio.gather(
        backstop.backstop_sweep(services), backstop.backstop_sweep(services)
    )
    assert sorted(swept, key=lambda n: -1 if n is None else n) == [None, 3]
    for user in users:
        assert (await services.redis.hget(keys.wallet(user), "balanceCents")) == "-50000"
    assert not await services.redis.exists(keys.lease(keys.MARGIN_BACKSTOP_LEASE))


async def test_a_sweep_killed_midway_and_rerun_closes_nothing_twice(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """The dead sweep got through half the users (their commits are in Redis, their events not
    yet in Postgres) and never released its lease: the next sweep skips until the lease expires,
    then sweeps everyone left; nobody is closed twice."""
    users = await users_at_risk(services, pg_admin, 12)
    lease = keys.lease(keys.MARGIN_BACKSTOP_LEASE)
    await services.redis.set(lease, "dead-worker", px=30_000)
    order = await snapshots.users_with_open_positions(services)
    for user in order[:6]:
        await evaluator.evaluate_user(services, user)

    assert await backstop.backstop_sweep(services) is None
    await services.redis.delete(lease)  # its 30 s TTL runs out
    assert await backstop.backstop_sweep(services) == len(users) - 6
    assert await backstop.backstop_sweep(services) == 0
    await persist(services)

    closes = pg_admin.execute(
        "SELECT count(*), count(DISTINCT user_id) FROM cfd_positions WHERE closed_by = 'washout'"
    ).fetchone()
    assert closes == (len(users), len(users))
    washouts = pg_admin.execute("SELECT count(*) FROM margin_events WHERE kind = 'washout'")
    assert washouts.fetchone() == (len(users),)
    seq = await services.redis.hget(keys.instrument(the_instrument(pg_admin)), "seq")
    assert seq == str(len(users) + 1 + len(users))  # opens, the price, one close each
    for user in users:
        assert balance(pg_admin, user) == Decimal("-500.00")


def the_instrument(pg: psycopg.Connection) -> UUID:
    row = pg.execute("SELECT id FROM instruments").fetchone()
    assert row is not None
    found: UUID = row[0]
    return found


async def test_an_uneventful_replay_moves_the_watermark_only_after_enough_ticks(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    user, instrument, _ = await one_position_at_risk(services, pg_admin)
    watermark = keys.margin_watermark(user)
    await move(services, instrument, 10_100)
    await evaluate(services, user)
    assert await services.redis.exists(watermark) == 0  # nothing happened: nothing written

    for step in range(evaluator.WATERMARK_LAG_TICKS):
        await move(services, instrument, 10_000 + step % 2)
    await evaluate(services, user)

    seq = await services.redis.hget(keys.instrument(instrument), "seq")
    assert await services.redis.hgetall(watermark) == {"v": "1", "below": "0", str(instrument): seq}


async def test_since_places_the_start_only_where_there_is_no_watermark(
    services: Services, pg_admin: psycopg.Connection
) -> None:
    """A replay from `since` judges the ticks after it: a breach before it is not re-judged
    (docs/decisions/0041); a user with a watermark replays from his watermark whatever `since`."""
    user, instrument, pid = await one_position_at_risk(services, pg_admin)
    await move(services, instrument, 8_000)  # a breach, before `since`
    await asyncio.sleep(CLOCK_STEP_S)
    since = datetime.now(UTC)
    await asyncio.sleep(CLOCK_STEP_S)
    await move(services, instrument, 11_000)

    quiet = await evaluator.evaluate_user(services, user, since=since)
    assert quiet.closed == 0 and quiet.replay is not None and quiet.replay.warnings == ()

    other, elsewhere, washed = await one_position_at_risk(services, pg_admin)
    await move(services, elsewhere, 9_400)  # 90 %: a warning, so his watermark is written
    await evaluate(services, other)
    breach = await move(services, elsewhere, 8_000)
    await move(services, elsewhere, 11_000)
    await asyncio.sleep(CLOCK_STEP_S)
    late = await evaluator.evaluate_user(services, other, since=datetime.now(UTC))
    assert late.closed == 1 and late.replay is not None
    assert [(w.seq, w.price_cents) for w in late.replay.washouts] == [(breach, 8_000)]
    assert (await position(services, washed))["exitCents"] == "8000"
    assert (await position(services, pid))["status"] == "open"


async def test_one_follow_up_is_owed_for_every_instrument_washouts_moved_until_it_starts(
    services: Services,
) -> None:
    """Decision 0165: washouts on many instruments owe one follow-up pass, which takes them all
    (one scan of their holders, not one per instrument); washouts after it started owe the next
    one."""
    one, other, third = sorted((uuid4(), uuid4(), uuid4()), key=str)

    assert await follow_ups.owe(services, follow_ups.WASHOUTS, [other]) is True
    assert await follow_ups.owe(services, follow_ups.WASHOUTS, [one, other]) is False
    assert await follow_ups.owe(services, follow_ups.WASHOUTS, []) is False
    assert await follow_ups.take(services, follow_ups.WASHOUTS) == [one, other]
    assert await follow_ups.take(services, follow_ups.WASHOUTS) == []  # nothing owed twice
    assert await follow_ups.owe(services, follow_ups.WASHOUTS, [third]) is True
    assert await follow_ups.take(services, follow_ups.WASHOUTS) == [third]


async def test_a_trade_pass_pending_never_holds_back_a_washout_follow_up(
    services: Services,
) -> None:
    """A trade pass waits a second before it runs (decision 0047); a washout's chain must not:
    each kind has its own mark and instruments."""
    one = uuid4()

    assert await follow_ups.owe(services, follow_ups.TRADES, [one]) is True
    assert await follow_ups.owe(services, follow_ups.WASHOUTS, [one]) is True
    assert await follow_ups.take(services, follow_ups.WASHOUTS) == [one]
    assert await follow_ups.owe(services, follow_ups.TRADES, [one]) is False  # still owed
    assert await follow_ups.take(services, follow_ups.TRADES) == [one]


async def test_a_lost_pass_lapses_and_the_next_takes_its_instruments(
    services: Services,
) -> None:
    one, other = sorted((uuid4(), uuid4()), key=str)
    for kind in (follow_ups.WASHOUTS, follow_ups.TRADES):
        assert await follow_ups.owe(services, kind, [one]) is True
        await services.redis.delete(kind.mark)  # its message lost: the mark lapses
        assert await follow_ups.owe(services, kind, [other]) is True
        assert await follow_ups.take(services, kind) == [one, other]


async def test_a_chunk_of_snapshots_reads_every_user_in_calls_of_a_bounded_size(
    services: Services, pg_admin: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decision 0162: one margin_snapshot.lua call stops at its budget of positions (Redis is
    held for a bounded time), and the users after it are read by the next calls, in order."""
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000, k_mod=FLAT)
    users = [make_user(pg_admin, balance="100000.00") for _ in range(4)]
    held = {}
    for n, user in enumerate(users):
        held[user] = {
            # NOTE: lots differ so that each open has its own clientRequestId
            await open_position(services, user, instrument, "long", 100 + k, 10_000)
            for k in range(n + 1)
        }
    nobody = uuid4()  # no wallet in hot state
    monkeypatch.setattr(snapshots, "SNAPSHOT_POSITIONS", 3)

    async def script_calls() -> int:
        stats = await services.redis.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "fcall"))

    before = await script_calls()
    states = await snapshots.snapshots(services, [*users, nobody])
    # INFO itself is no script call; nothing else runs scripts on this Redis meanwhile
    calls = await script_calls() - before

    assert calls == 4  # 1 + 2 positions, then 3, then 4, then the empty wallet
    assert states[-1] is None
    assert [{p.id for p in s.positions} for s in states[:-1] if s] == [held[u] for u in users]
