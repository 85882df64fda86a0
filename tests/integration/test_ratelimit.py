"""Rate limits (SPEC §3): per IP overall and per route, in Redis, 429 with Retry-After; off with
DISABLE_RATE_LIMIT outside production. CORS from CORS_ORIGINS with credentials."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from falcon import testing

from ftl.core.config import Settings
from ftl.store.ratelimit import IP_LIMIT_PER_MIN, client_key
from ftl.store.services import Services
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


async def test_one_ipv6_slash_64_is_one_client(limited: testing.ASGIConductor) -> None:
    path = "/api/public/referral/validate"
    # Ten addresses of one /64, as a client rotating through its prefix would use.
    for host in range(1, 11):
        answer = await limited.simulate_get(
            path, params={"code": "abcdef12"}, remote_addr=f"2001:db8:1:2::{host:x}"
        )
        assert answer.status_code == 200
    rotated = await limited.simulate_get(
        path, params={"code": "abcdef12"}, remote_addr="2001:db8:1:2:ffff:ffff:ffff:ffff"
    )
    assert_envelope(rotated, 429, "rate_limited")
    neighbour = await limited.simulate_get(
        path, params={"code": "abcdef12"}, remote_addr="2001:db8:1:3::1"
    )
    assert neighbour.status_code == 200


def test_the_client_of_a_limit_is_an_ipv4_address_or_an_ipv6_slash_64() -> None:
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("not-an-address") == "not-an-address"


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
        # The answer depends on Origin, so caches must key on it, allowed or not.
        plain = await conductor.simulate_get("/api/flags")
        for answer in (allowed, preflight, foreign, plain):
            assert "origin" in answer.headers["vary"].lower().replace(" ", "").split(",")
