"""A store that does not answer (PostgreSQL restarting, Redis gone) is a 503 `unavailable` with
Retry-After, never a 500: the client retries (docs/operations.md, Failures)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from falcon import testing

from ftl.core.config import Settings
from ftl.store.services import Services
from tests.e2e.conftest import free_port
from tests.integration.test_web import assert_envelope
from web.app import create_app

DOWN: dict[str, Callable[[Settings, int], Settings]] = {
    "postgres": lambda s, port: dataclasses.replace(
        s, database_url=f"postgresql+psycopg://ftl@127.0.0.1:{port}/ftl"
    ),
    "redis": lambda s, port: dataclasses.replace(s, redis_url=f"redis://127.0.0.1:{port}/0"),
}


@pytest.mark.parametrize("store", list(DOWN))
async def test_a_route_whose_store_is_down_answers_503(
    settings: Settings, market: Services, store: str
) -> None:
    down = DOWN[store](settings, free_port())
    async with testing.ASGIConductor(create_app(down)) as conductor:
        result = await conductor.simulate_get("/api/instruments")
    assert_envelope(result, 503, "unavailable")
    assert result.headers["retry-after"] == "1"


async def test_the_same_route_answers_when_the_stores_do(
    settings: Settings, market: Services
) -> None:
    async with testing.ASGIConductor(create_app(settings)) as conductor:
        result = await conductor.simulate_get("/api/instruments")
    assert result.status_code == 200, result.text
