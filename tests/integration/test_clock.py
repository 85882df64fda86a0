"""The clock: one sender at a time under the Redis lease, a standby takes over."""

from __future__ import annotations

import json
import threading
import time

import redis

from ftl.core.config import Settings
from ftl.store import keys
from workers import margin, poller
from workers.broker import NAMESPACE
from workers.clock import (
    LEASE,
    LEASE_TTL_MS,
    Clock,
    Periodic,
    replay_on_reconnect,
    schedule,
    sportmonks_poll_period_ms,
)


def test_only_the_lease_holder_sends_and_a_standby_takes_over(
    settings: Settings, redis_admin: redis.Redis, clean: None
) -> None:
    sent: list[str] = []
    first = Clock(redis_admin, [Periodic("job", 60_000, lambda: sent.append("first"))])
    second = Clock(redis_admin, [Periodic("job", 60_000, lambda: sent.append("second"))])
    assert first.tick() == 1
    assert second.tick() == 0
    assert first.tick() == 0  # not due again for a minute
    redis_admin.delete(LEASE)  # the first clock died and its lease ran out
    assert second.tick() == 1
    assert first.tick() == 0
    assert sent == ["first", "second"]


def test_a_clock_renews_only_its_own_lease_and_gives_back_only_its_own(
    redis_admin: redis.Redis, clean: None
) -> None:
    clock = Clock(redis_admin, [])
    assert clock.hold_lease()
    redis_admin.pexpire(LEASE, 100)
    assert clock.hold_lease()
    assert redis_admin.pttl(LEASE) > 1_000  # renewed to the full time to live
    redis_admin.set(LEASE, "another-clock", px=LEASE_TTL_MS)  # ours ran out, another took it
    assert not clock.hold_lease()
    assert redis_admin.get(LEASE) == "another-clock"
    clock.running = False
    clock.run()  # stopping gives back only a lease it holds
    assert redis_admin.get(LEASE) == "another-clock"


def test_sportmonks_is_polled_every_2_s_while_live_and_every_60_s_otherwise(
    redis_admin: redis.Redis, clean: None
) -> None:
    assert sportmonks_poll_period_ms(redis_admin) == 2_000, "no poll answered yet: ask again soon"
    redis_admin.set(keys.LIVE_FIXTURES, '["5b0c6c1e-6d1b-4b43-9a35-1f3b8f4f6a10"]')
    assert sportmonks_poll_period_ms(redis_admin) == poller.LIVE_POLL_PERIOD_MS == 2_000
    redis_admin.set(keys.LIVE_FIXTURES, "[]")
    assert sportmonks_poll_period_ms(redis_admin) == poller.IDLE_POLL_PERIOD_MS == 60_000


def test_a_due_poll_is_rescheduled_by_the_live_state(redis_admin: redis.Redis, clean: None) -> None:
    sent: list[str] = []
    job = Periodic(
        "poll", lambda: sportmonks_poll_period_ms(redis_admin), lambda: sent.append("poll")
    )
    clock = Clock(redis_admin, [job])
    redis_admin.set(keys.LIVE_FIXTURES, '["5b0c6c1e-6d1b-4b43-9a35-1f3b8f4f6a10"]')
    assert clock.tick() == 1
    first_due = job.next_ms
    assert clock.tick() == 0
    redis_admin.set(keys.LIVE_FIXTURES, "[]")
    job.next_ms = 0
    clock.tick()
    assert job.next_ms - first_due >= 58_000, "after full time the next poll waits a minute"
    assert sent == ["poll", "poll"]


def test_the_schedule_polls_flushes_snapshots_and_sweeps(redis_admin: redis.Redis) -> None:
    names = {job.name for job in schedule(redis_admin)}
    assert {"sportmonks-poll", "flush", "leaderboards", "margin-backstop"} <= names


def test_a_reconnect_is_replayed_once_by_the_clock_that_holds_the_lease(
    redis_admin: redis.Redis, clean: None
) -> None:
    leader = Clock(redis_admin, [])
    standby = Clock(redis_admin, [])
    leader.tick()
    standby.tick()
    assert (leader.leader, standby.leader) == (True, False)
    subscribers_before = redis_admin.pubsub_numsub(keys.USER_RECONNECT_CHANNEL)[0][1]
    listeners = [
        threading.Thread(target=replay_on_reconnect, args=(clock,), daemon=True)
        for clock in (leader, standby)
    ]
    for listener in listeners:
        listener.start()
    queued = f"{NAMESPACE}:{margin.QUEUE}.msgs"
    user_id = "0b5f0a4e-8c55-4c2a-9a53-0e8f0f3c2d11"
    try:
        # NOTE: publish until both listeners are subscribed (the first enqueue proves it)...
        deadline = time.monotonic() + 10
        while redis_admin.hlen(queued) == 0 and time.monotonic() < deadline:
            redis_admin.publish(keys.USER_RECONNECT_CHANNEL, user_id)
            time.sleep(0.2)
        time.sleep(0.3)
        redis_admin.delete(queued)
        # ...then one reconnect reaches both clocks and is enqueued once.
        assert redis_admin.publish(keys.USER_RECONNECT_CHANNEL, user_id) >= 2
        time.sleep(0.5)
        messages = [json.loads(m) for m in redis_admin.hvals(queued)]
    finally:
        leader.running = standby.running = False
        for listener in listeners:
            listener.join(timeout=10)
    assert not any(listener.is_alive() for listener in listeners), "a stopped clock stops listening"
    assert redis_admin.pubsub_numsub(keys.USER_RECONNECT_CHANNEL)[0][1] == subscribers_before
    assert len(messages) == 1
    assert {m["actor_name"] for m in messages} == {"replay_user"}
    assert {m["args"][0] for m in messages} == {user_id}
