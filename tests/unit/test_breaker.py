"""The circuit breaker as a pure state machine (SPEC §5.2): 5 consecutive failures open it for
30 s, then exactly one probe; a good probe closes it, a bad one opens it again."""

from __future__ import annotations

from ftl.sportmonks.breaker import (
    FAILURES_TO_OPEN,
    OPEN_FOR_MS,
    PROBE_TIMEOUT_MS,
    Admission,
    Breaker,
    BreakerState,
)


def failing(times: int, now_ms: int = 0) -> Breaker:
    breaker = Breaker()
    for _ in range(times):
        breaker, admission = breaker.admit(now_ms)
        breaker = breaker.failed(admission, now_ms)
    return breaker


def test_it_opens_after_exactly_five_consecutive_failures() -> None:
    assert FAILURES_TO_OPEN == 5
    assert failing(4).state is BreakerState.CLOSED
    assert failing(5).state is BreakerState.OPEN


def test_a_success_resets_the_count() -> None:
    breaker = failing(4)
    breaker = breaker.succeeded(Admission.CALL)
    for _ in range(4):
        breaker = breaker.failed(Admission.CALL, 0)
    assert breaker.state is BreakerState.CLOSED


def test_open_rejects_calls_for_30_seconds() -> None:
    assert OPEN_FOR_MS == 30_000
    breaker = failing(5, now_ms=1_000)
    assert breaker.admit(1_000)[1] is Admission.REJECT
    assert breaker.admit(1_000 + OPEN_FOR_MS - 1)[1] is Admission.REJECT
    assert breaker.admit(1_000 + OPEN_FOR_MS)[1] is Admission.PROBE


def test_only_one_probe_goes_through() -> None:
    breaker, first = failing(5).admit(OPEN_FOR_MS)
    _, second = breaker.admit(OPEN_FOR_MS + 1)
    assert (first, second) == (Admission.PROBE, Admission.REJECT)
    assert breaker.state is BreakerState.PROBING


def test_a_good_probe_closes_it() -> None:
    breaker, probe = failing(5).admit(OPEN_FOR_MS)
    closed = breaker.succeeded(probe)
    assert closed == Breaker()
    assert closed.admit(OPEN_FOR_MS)[1] is Admission.CALL


def test_a_bad_probe_opens_it_for_another_30_seconds() -> None:
    breaker, probe = failing(5).admit(OPEN_FOR_MS)
    reopened = breaker.failed(probe, OPEN_FOR_MS + 200)
    assert reopened.state is BreakerState.OPEN
    assert reopened.admit(2 * OPEN_FOR_MS)[1] is Admission.REJECT
    assert reopened.admit(2 * OPEN_FOR_MS + 200)[1] is Admission.PROBE


def test_a_stale_call_cannot_close_or_extend_an_open_breaker() -> None:
    opened = failing(5)
    assert opened.succeeded(Admission.CALL) == opened
    assert opened.failed(Admission.CALL, 10_000) == opened
    probing, _ = opened.admit(OPEN_FOR_MS)
    assert probing.succeeded(Admission.CALL) == probing


def test_a_lost_probe_frees_the_slot_after_its_timeout() -> None:
    probing, _ = failing(5).admit(OPEN_FOR_MS)
    assert probing.admit(OPEN_FOR_MS + PROBE_TIMEOUT_MS - 1)[1] is Admission.REJECT
    assert probing.admit(OPEN_FOR_MS + PROBE_TIMEOUT_MS)[1] is Admission.PROBE


def test_it_survives_its_redis_hash() -> None:
    probing, _ = failing(5, now_ms=7).admit(OPEN_FOR_MS + 7)
    assert Breaker.from_hash(probing.to_hash()) == probing
    assert Breaker.from_hash({}) == Breaker()
