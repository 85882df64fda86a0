"""GET /metrics of the web app (SPEC §3.3) and the request id of every response: latency by route
template (never the raw path), trade outcomes by code, Lua call time."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from falcon import testing
from prometheus_client.parser import text_string_to_metric_families

from ftl.core.config import Settings
from ftl.store.services import Services
from ftl.trading import wallets
from tests.integration.trading_helpers import access_token, make_instrument, make_user
from web.app import create_app


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[testing.ASGIConductor]:
    async with testing.ASGIConductor(create_app(settings)) as conductor:
        yield conductor


async def scrape(client: testing.ASGIConductor) -> dict[tuple[str, tuple[Any, ...]], float]:
    """Every sample of GET /metrics by name and sorted labels."""
    result = await client.simulate_get("/metrics")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(result.text)
        for sample in family.samples
    }


def figure(samples: dict[tuple[str, tuple[Any, ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_latency_is_labelled_by_route_template_and_status(
    client: testing.ASGIConductor, services: Services, pg_admin: psycopg.Connection
) -> None:
    instrument = await make_instrument(services, pg_admin)
    route = "/api/instruments/{instrument_id:uuid}"
    before = await scrape(client)
    for _ in range(3):
        assert (await client.simulate_get(f"/api/instruments/{instrument}")).status_code == 200
    assert (await client.simulate_get("/api/no-such-route")).status_code == 404
    after = await scrape(client)

    name = "ftl_http_request_duration_seconds_count"
    labels = {"method": "GET", "route": route, "status": "200"}
    assert figure(after, name, **labels) - figure(before, name, **labels) == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert figure(after, name, **unmatched) - figure(before, name, **unmatched) == 1
    # NOTE: ids never become label values, or every instrument would mint a series.
    assert str(instrument) not in (await client.simulate_get("/metrics")).text


async def test_a_refused_open_counts_its_code_and_times_its_lua_call(
    client: testing.ASGIConductor, services: Services, pg_admin: psycopg.Connection
) -> None:
    instrument = await make_instrument(services, pg_admin, live_base_cents=10_000)
    user = make_user(pg_admin, balance="100.00")
    await wallets.load(services, user)
    headers = {"Authorization": f"Bearer {access_token(services, user)[0]}"}
    order = {
        "instrumentId": str(instrument),
        "direction": "long",
        "lotSize": 1,  # margin 1,000.00 against a balance of 100.00
        "clientRequestId": "o1",
        "clientPrice": 100,
    }
    before = await scrape(client)
    refused = await client.simulate_post("/api/positions/open", json=order, headers=headers)
    assert refused.status_code == 409 and refused.json["error"]["code"] == "insufficient_margin"
    opened = await client.simulate_post(
        "/api/positions/open",
        json={**order, "lotSize": 0.05, "clientRequestId": "o2"},
        headers=headers,
    )
    assert opened.status_code == 201, opened.text
    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return figure(after, name, **labels) - figure(before, name, **labels)

    outcomes = "ftl_trade_outcomes_total"
    assert grew(outcomes, action="open", outcome="insufficient_margin") == 1
    assert grew(outcomes, action="open", outcome="ok") == 1
    assert grew("ftl_lua_call_seconds_count", script="position_open") == 2
    assert grew("ftl_lua_call_seconds_sum", script="position_open") > 0
    route = {"method": "POST", "route": "/api/positions/open"}
    assert grew("ftl_http_request_duration_seconds_count", **route, status="409") == 1
    assert grew("ftl_http_request_duration_seconds_count", **route, status="201") == 1


async def test_every_response_carries_a_request_id(client: testing.ASGIConductor) -> None:
    kept = await client.simulate_get("/health", headers={"X-Request-Id": "lb-7f3a.1"})
    assert kept.headers["x-request-id"] == "lb-7f3a.1"
    made = await client.simulate_get("/api/no-such-route")
    assert made.status_code == 404 and len(made.headers["x-request-id"]) == 16
    # APPSEC: a client id that is not a short token is replaced, not echoed into logs.
    for hostile in ("x" * 65, "a b", "<script>"):
        replaced = await client.simulate_get("/health", headers={"X-Request-Id": hostile})
        assert replaced.headers["x-request-id"] not in (hostile, made.headers["x-request-id"])


async def test_metrics_need_the_metrics_token_when_one_is_set(
    settings: Settings, services: Services
) -> None:
    guarded = dataclasses.replace(settings, metrics_token="s3cret-scrape")
    async with testing.ASGIConductor(create_app(guarded)) as conductor:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-scrape"}):
            refused = await conductor.simulate_get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.json["error"]["code"] == "unauthorized"
        allowed = await conductor.simulate_get(
            "/metrics", headers={"Authorization": "Bearer s3cret-scrape"}
        )
        assert allowed.status_code == 200
        assert "ftl_http_request_duration_seconds" in allowed.text
