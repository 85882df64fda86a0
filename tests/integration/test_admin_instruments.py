"""POST /api/admin/instruments/{id} (SPEC §3.3): an admin activates, deactivates and sets kMod (a
kMod change emits a tick); and the `maintenanceMode` flag: opens, user closes and level changes
answer 503 `maintenance` to non-admins while reads and system closes go on."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import psycopg
import pytest
from falcon import testing

from ftl.market import prices, rules
from ftl.store import keys
from ftl.store.services import Services
from ftl.store.ticks import Tick, TickSource
from tests.integration.api_helpers import login

WAIT_S = 5.0  # the flags reach every process within a second (ftl/store/flags.py FLAG_CACHE_S)


@pytest.fixture
async def admin(api: testing.ASGIConductor, pg_admin: psycopg.Connection) -> dict[str, str]:
    """An admin's headers: his role is in Postgres, and in the token of his next login."""
    user_id, _ = await login(api, "Operator")
    pg_admin.execute("UPDATE users SET role = 'admin' WHERE id = %s", (user_id,))
    _, headers = await login(api, "Operator")
    return headers


@pytest.fixture
async def player(api: testing.ASGIConductor) -> dict[str, str]:
    _, headers = await login(api, "Player")
    return headers


@pytest.fixture
async def instrument(api: testing.ASGIConductor) -> dict[str, Any]:
    listed = await api.simulate_get("/api/instruments", params={"position": "FWD"})
    found: dict[str, Any] = listed.json["instruments"][0]
    return found


async def open_long(
    api: testing.ASGIConductor,
    headers: dict[str, str],
    instrument: dict[str, Any],
    lots: float,
    **levels: float,
) -> testing.Result:
    return await api.simulate_post(
        "/api/positions/open",
        headers=headers,
        json={
            "instrumentId": instrument["id"],
            "direction": "long",
            "lotSize": lots,
            "clientRequestId": uuid.uuid4().hex,
            "clientPrice": round(instrument["price"] * 1.04, 2),
            "slippageTolerancePct": 0.05,
            **levels,
        },
    )


def admin_route(instrument_id: object) -> str:
    return f"/api/admin/instruments/{instrument_id}"


async def as_now(api: testing.ASGIConductor, instrument: dict[str, Any]) -> dict[str, Any]:
    """The instrument as GET answers it now."""
    found: dict[str, Any] = (await api.simulate_get(f"/api/instruments/{instrument['id']}")).json
    return found


async def last_tick(services: Services, instrument_id: str) -> Tick:
    logged: list[str] = await services.redis.zrange(keys.tick_log(instrument_id), -1, -1)  # type: ignore[assignment]
    return Tick.from_json(logged[0])


async def answers(call: Any, status: int) -> testing.Result:
    """The call's result once it answers `status` (a flag reaches each process within a second);
    the last result if it never does within WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result: testing.Result = await call()
        if result.status_code == status or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def test_an_admin_deactivates_and_reactivates_an_instrument(
    api: testing.ASGIConductor,
    admin: dict[str, str],
    player: dict[str, str],
    instrument: dict[str, Any],
) -> None:
    route = admin_route(instrument["id"])
    off = await api.simulate_post(route, headers=admin, json={"isActive": False})
    assert off.status_code == 200, off.text
    assert off.json["isActive"] is False
    refused = await open_long(api, player, instrument, 0.2)
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "instrument_inactive")
    on = await api.simulate_post(route, headers=admin, json={"isActive": True})
    assert on.status_code == 200 and on.json["isActive"] is True
    assert (await open_long(api, player, instrument, 0.2)).status_code == 201


async def test_a_kmod_change_emits_a_tick_and_the_next_fill_walks_the_new_curve(
    api: testing.ASGIConductor,
    admin: dict[str, str],
    player: dict[str, str],
    instrument: dict[str, Any],
    services: Services,
) -> None:
    assert (await open_long(api, player, instrument, 0.5)).status_code == 201
    before = await as_now(api, instrument)
    live, net = round(before["liveBasePrice"] * 100), round(before["netLots"] * 100)
    previous = await last_tick(services, instrument["id"])

    changed = await api.simulate_post(
        admin_route(instrument["id"]), headers=admin, json={"kMod": 0.25}
    )

    assert changed.status_code == 200, changed.text
    price = rules.price_cents(live, 250_000, net)
    assert (changed.json["kMod"], round(changed.json["price"] * 100)) == (0.25, price)
    tick = await last_tick(services, instrument["id"])
    assert (tick.seq, tick.source, tick.k_mod_micros) == (
        previous.seq + 1,
        TickSource.LIVE,
        250_000,
    )
    assert (tick.price_cents, tick.net_lots_centis) == (price, net)
    second = await open_long(api, player, changed.json, 0.2)
    assert second.status_code == 201, second.text
    fill = rules.fill_cents(live, 250_000, net, 20, rules.LONG)
    assert round(second.json["position"]["entryPrice"] * 100) == fill


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, "validation_error", "isActive"),
        ({"kMod": 2.01}, "validation_error", "kMod"),
        ({"kMod": -0.01}, "validation_error", "kMod"),
        ({"kMod": 0.0000001}, "validation_error", "kMod"),
        ({"kMod": "0.1"}, "validation_error", "kMod"),
        ({"isActive": "yes"}, "validation_error", "isActive"),
        ({"isActive": False, "kMod": None}, "validation_error", "kMod"),  # schemathesis found
        ({"isActive": None, "kMod": 0.1}, "validation_error", "isActive"),
        ({"active": True}, "unknown_field", "active"),
    ],
)
async def test_a_bad_change_is_400_and_changes_nothing(
    api: testing.ASGIConductor,
    admin: dict[str, str],
    instrument: dict[str, Any],
    body: dict[str, Any],
    code: str,
    field: str,
) -> None:
    route = admin_route(instrument["id"])
    result = await api.simulate_post(route, headers=admin, json=body)
    assert result.status_code == 400, result.text
    assert (result.json["error"]["code"], result.json["error"]["details"]["field"]) == (code, field)
    assert await as_now(api, instrument) == instrument


async def test_only_an_admin_changes_an_instrument_and_only_one_that_exists(
    api: testing.ASGIConductor,
    admin: dict[str, str],
    player: dict[str, str],
    instrument: dict[str, Any],
) -> None:
    route = admin_route(instrument["id"])
    assert (await api.simulate_post(route, json={"isActive": False})).status_code == 401
    forbidden = await api.simulate_post(route, headers=player, json={"isActive": False})
    assert forbidden.status_code == 403
    missing = await api.simulate_post(admin_route(uuid.uuid4()), headers=admin, json={"kMod": 0.1})
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "not_found")
    assert await as_now(api, instrument) == instrument


async def test_maintenance_stops_players_trading_but_not_reads_admins_or_system_closes(
    api: testing.ASGIConductor,
    admin: dict[str, str],
    player: dict[str, str],
    instrument: dict[str, Any],
    services: Services,
) -> None:
    opened = await open_long(
        api, player, instrument, 0.5, stopLoss=round(instrument["price"] * 0.9, 2)
    )
    assert opened.status_code == 201, opened.text
    position = opened.json["position"]
    flag = await api.simulate_put(
        "/api/admin/flags/maintenanceMode", headers=admin, json={"enabled": True}
    )
    assert flag.status_code == 200, flag.text

    gated = await answers(lambda: open_long(api, player, instrument, 0.2), 503)
    assert (gated.status_code, gated.json["error"]["code"]) == (503, "maintenance")
    path = f"/api/positions/{position['id']}"
    closing = await api.simulate_delete(path, headers=player, params={"clientRequestId": "c"})
    levels = await api.simulate_patch(path, headers=player, json={"takeProfit": None})
    for refused in (closing, levels):
        assert (refused.status_code, refused.json["error"]["code"]) == (503, "maintenance")
    assert (await api.simulate_get("/api/portfolio", headers=player)).status_code == 200
    assert (await open_long(api, admin, instrument, 0.2)).status_code == 201

    # a live price through the stop: the system close goes on
    live = round(instrument["liveBasePrice"] * 100)
    await prices.apply_base_price(
        services, uuid.UUID(instrument["id"]), live * 8 // 10, TickSource.LIVE
    )
    fields = await services.redis.hgetall(keys.position(position["id"]))
    assert fields["closedBy"] == "stop_loss"

    await api.simulate_put(
        "/api/admin/flags/maintenanceMode", headers=admin, json={"enabled": False}
    )
    reopened = await answers(lambda: open_long(api, player, instrument, 0.2), 201)
    assert reopened.status_code == 201, reopened.text
