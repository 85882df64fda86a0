"""Shared fixtures of the integration tests: the seeded demo market, the API on it, a simulated
match, and a local Google issuer."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from falcon import testing

from ftl.core import logs
from ftl.core.config import Settings
from ftl.ops.dev_google import DevGoogleIssuer
from ftl.ops.scenarios import load_scenario
from ftl.ops.seed import seed
from ftl.ops.simulator import Simulator, serve_in_thread
from ftl.store.services import Services
from tests.integration.simulated_match import SCENARIO, SPEED, Clock
from web.app import create_app


@pytest.fixture
def issuer() -> Iterator[DevGoogleIssuer]:
    """A local Google sign-in issuer (its JWKS on a free port), fresh for each test: some tests
    count its JWKS requests."""
    running = DevGoogleIssuer().start()
    yield running
    running.stop()


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


@pytest.fixture
async def api(settings: Settings, market: Services) -> AsyncIterator[testing.ASGIConductor]:
    """The HTTP API (lifespan included) over the seeded market."""
    async with testing.ASGIConductor(create_app(settings)) as conductor:
        yield conductor


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every log line of the test at DEBUG, formatted as production writes them: at emit time, so
    each line carries the request id of the thread that logged it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)
