"""Fixtures of the integration tests that play a simulated match."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ftl.seed import seed
from ftl.services import Services
from ftl.sportmonks.simulator import Simulator, load_scenario, serve_in_thread
from tests.integration.simulated_match import SCENARIO, SPEED, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim_url(clock: Clock) -> Iterator[str]:
    simulator = Simulator(load_scenario(SCENARIO), speed=SPEED, clock_s=lambda: clock.seconds)
    with serve_in_thread(simulator) as url:
        yield url


@pytest.fixture
async def market(services: Services) -> Services:
    await seed(services.engine, services.redis, admin_email="admin@ftl.test")
    return services
