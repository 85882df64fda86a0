"""GET/PUT /api/admin/settings: the scoring weights of SPEC §1.3, admin only; a bad table is
refused naming the field and changes nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from falcon import testing

from ftl.market.scoring import DEFAULT_WEIGHTS
from ftl.market.weights import read_weights
from ftl.sportmonks.payload import Stat
from ftl.store.services import Services
from tests.integration.api_helpers import login

ROUTE = "/api/admin/settings"


@pytest.fixture
async def admin(api: testing.ASGIConductor, pg_admin: psycopg.Connection) -> dict[str, str]:
    user_id, headers = await login(api, "Operator")
    pg_admin.execute("UPDATE users SET role = 'admin' WHERE id = %s", (user_id,))
    return headers


async def test_the_admin_reads_and_replaces_the_weights(
    api: testing.ASGIConductor, admin: dict[str, str], services: Services
) -> None:
    got = await api.simulate_get(ROUTE, headers=admin)
    assert got.status_code == 200, got.text
    assert got.json == {"scoringWeights": DEFAULT_WEIGHTS.to_json()}
    table = DEFAULT_WEIGHTS.to_json()
    table["FWD"]["goals"] = "4.5"
    put = await api.simulate_put(ROUTE, headers=admin, json={"scoringWeights": table})
    assert put.status_code == 200, put.text
    assert put.json["scoringWeights"]["FWD"]["goals"] == "4.5"
    assert (await read_weights(services.engine)).weight("FWD", Stat.GOALS) == 4.5


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({}, "validation_error", "scoringWeights"),
        ({"weights": {}}, "unknown_field", "weights"),
        ({"scoringWeights": "all"}, "validation_error", "scoringWeights"),
        (
            {"scoringWeights": {**DEFAULT_WEIGHTS.to_json(), "FWD": {"goals": "x"}}},
            "validation_error",
            "scoringWeights.FWD.goals",
        ),
    ],
)
async def test_a_bad_table_is_400_and_changes_nothing(
    api: testing.ASGIConductor,
    admin: dict[str, str],
    services: Services,
    body: dict[str, Any],
    code: str,
    field: str,
) -> None:
    result = await api.simulate_put(ROUTE, headers=admin, json=body)
    assert result.status_code == 400, result.text
    assert result.json["error"]["code"] == code
    assert result.json["error"]["details"]["field"] == field
    assert await read_weights(services.engine) == DEFAULT_WEIGHTS


async def test_only_an_admin_may_see_or_change_them(
    api: testing.ASGIConductor, services: Services
) -> None:
    _, player = await login(api, "Player")
    assert (await api.simulate_get(ROUTE)).status_code == 401
    assert (await api.simulate_get(ROUTE, headers=player)).status_code == 403
    table = {"scoringWeights": DEFAULT_WEIGHTS.to_json()}
    table["scoringWeights"]["GK"]["saves"] = "9.0"
    assert (await api.simulate_put(ROUTE, headers=player, json=table)).status_code == 403
    assert await read_weights(services.engine) == DEFAULT_WEIGHTS
