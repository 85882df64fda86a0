"""The `ws` process runs its own full garbage collections, between fan-out cycles, at most once
per period; tests and other users of the hub leave the collector alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ftl.core.config import Settings
from ftl.store.services import Services
from web.ws.config import FULL_COLLECTION_PERIOD_S, WsConfig
from web.ws.hub import AUTOMATIC_FULL_COLLECTIONS_OFF, Hub
from web.ws.metrics import WsMetrics


def full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


@pytest.fixture
def collector_restored() -> Iterator[None]:
    # NOTE: automatic collections off meanwhile, so only the hub's own can move the count.
    thresholds = gc.get_threshold()
    gc.disable()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.enable()


def test_a_ws_process_collects_fully_itself(settings: Settings) -> None:
    assert WsConfig.from_settings(settings).full_collection_period_s == FULL_COLLECTION_PERIOD_S
    assert WsConfig().full_collection_period_s is None


async def test_a_full_collection_runs_after_a_cycle_once_per_period(
    services: Services, collector_restored: None
) -> None:
    hub = Hub(services.redis, WsConfig(full_collection_period_s=3600.0), WsMetrics())
    assert gc.get_threshold()[2] == AUTOMATIC_FULL_COLLECTIONS_OFF
    assert gc.get_freeze_count() > 0
    before = full_collections()
    hub._collect_between_cycles()
    assert full_collections() == before  # not owed yet
    hub._last_full_collection -= 3600.0
    hub._collect_between_cycles()
    assert full_collections() == before + 1
    hub._collect_between_cycles()
    assert full_collections() == before + 1


async def test_the_hub_leaves_the_collector_alone_by_default(
    services: Services, collector_restored: None
) -> None:
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    hub = Hub(services.redis, WsConfig(), WsMetrics())
    before = full_collections()
    hub._last_full_collection -= 10_000.0
    hub._collect_between_cycles()
    assert (gc.get_threshold(), gc.get_freeze_count()) == (thresholds, frozen)
    assert full_collections() == before
