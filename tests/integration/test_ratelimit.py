"""Rate limits (SPEC §3): per IP overall and per route, in Redis, 429 with Retry-After; off with
DISABLE_RATE_LIMIT outside production. CORS from CORS_ORIGINS with credentials."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from falcon import testing

from ftl.config import Settings
from ftl.ratelimit import IP_LIMIT_PER_MIN
from ftl.services import Services
from tests.integration.test_web import assert_envelope
from web.app import create_app
from web.ratelimit import ROUTE_LIMITS_PER_MIN


@pytest.fixture
async def limited(
    settings: Settings, services: Services, districts: None
) -> AsyncIterator[testing.ASGIConductor]:
    on = dataclasses.replace(settings, disable_rate_limit=False)
    assert on.rate_limit_enabled
    async with testing.ASGIConductor(create_app(on)) as conductor:
        yield conductor


def test_the_route_limits_are_those_of_the_spec() -> None:
    assert ROUTE_LIMITS_PER_MIN[("POST", "/api/auth/google")] == 20
    assert ROUTE_LIMITS_PER_MIN[("POST", "/api/auth/verify-otp")] == 10
    assert ROUTE_LIMITS_PER_MIN[("POST", "/api/auth/resend-otp")] == 5
    assert ROUTE_LIMITS_PER_MIN[("POST", "/api/auth/google/complete")] == 10
    assert ROUTE_LIMITS_PER_MIN[("POST", "/api/ws/token")] == 60
    assert ROUTE_LIMITS_PER_MIN[("GET", "/api/public/referral/validate")] == 10
    assert IP_LIMIT_PER_MIN == 200


async def test_a_route_limit_answers_429_with_retry_after(
    limited: testing.ASGIConductor, services: Services
) -> None:
    path = "/api/public/referral/validate"
    for _ in range(10):
        assert (await limited.simulate_get(path, params={"code": "abcdef12"})).status_code == 200
    refused = await limited.simulate_get(path, params={"code": "abcdef12"})
    assert_envelope(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Another route of the same client is still open (its own limit, and 11 < 200 overall).
    assert (await limited.simulate_get("/api/districts")).status_code == 200
    # Another client is not affected.
    other = await limited.simulate_get(path, params={"code": "abcdef12"}, remote_addr="10.0.0.2")
    assert other.status_code == 200


async def test_the_overall_limit_is_200_a_minute_per_ip(limited: testing.ASGIConductor) -> None:
    for _ in range(IP_LIMIT_PER_MIN):
        assert (await limited.simulate_get("/api/districts")).status_code == 200
    assert_envelope(await limited.simulate_get("/api/flags"), 429, "rate_limited")
    assert (await limited.simulate_get("/health")).status_code == 200  # probes are never limited


async def test_switched_off_the_limits_do_not_count(
    settings: Settings, services: Services, districts: None
) -> None:
    assert not settings.rate_limit_enabled
    async with testing.ASGIConductor(create_app(settings)) as conductor:
        for _ in range(12):
            result = await conductor.simulate_get("/api/public/referral/validate")
            assert result.status_code == 200
    assert await services.redis.keys("rate:*") == []


def test_production_ignores_the_switch(settings: Settings) -> None:
    production = dataclasses.replace(settings, env="production", disable_rate_limit=True)
    assert production.rate_limit_enabled


async def test_cors_allows_the_configured_origins_with_credentials(
    settings: Settings, services: Services
) -> None:
    origin = settings.cors_origins[0]
    async with testing.ASGIConductor(create_app(settings)) as conductor:
        allowed = await conductor.simulate_get("/api/flags", headers={"Origin": origin})
        assert allowed.headers["access-control-allow-origin"] == origin
        assert allowed.headers["access-control-allow-credentials"] == "true"
        preflight = await conductor.simulate_options(
            "/api/auth/refresh",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.headers["access-control-allow-origin"] == origin
        foreign = await conductor.simulate_get(
            "/api/flags", headers={"Origin": "https://evil.example.com"}
        )
        assert "access-control-allow-origin" not in foreign.headers
