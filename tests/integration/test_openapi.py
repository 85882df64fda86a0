"""The OpenAPI document (SPEC §3.3) is true: it names exactly the routed paths and methods, and
every route, exercised on its success and its refusals, answers what the document promises."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import Iterator
from typing import Any

import falcon
import falcon.asgi
import psycopg
import pytest
from falcon import testing
from falcon.routing import CompiledRouter
from falcon.routing.compiled import CompiledRouterNode
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from ftl.core.config import Settings
from ftl.market.scoring import DEFAULT_WEIGHTS
from ftl.ops.dev_google import DevGoogleIssuer
from ftl.store.flags import FLAG_CACHE_S
from ftl.store.services import Services
from tests.integration.api_helpers import login
from tests.integration.openapi_helpers import Exercised, checked
from web.app import create_app
from web.openapi import document

# NOTE: OPTIONS answers every route (CORS preflight); it is the framework's, not an operation.
FRAMEWORK_METHODS = frozenset({"OPTIONS"})


def _nodes(nodes: list[CompiledRouterNode]) -> Iterator[CompiledRouterNode]:
    for node in nodes:
        yield node
        yield from _nodes(node.children)


def routed_operations(app: falcon.asgi.App[Any, Any]) -> set[tuple[str, str]]:
    """(METHOD, OpenAPI path) for every responder the app's router holds."""
    router = app._router
    assert isinstance(router, CompiledRouter)
    found = set()
    for node in _nodes(router._roots):
        if node.resource is None or node.uri_template is None or node.method_map is None:
            continue
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", node.uri_template)
        for method, responder in node.method_map.items():
            # NOTE: falcon fills unimplemented methods with its own 405 responders; ours are
            # the resource's bound methods (on_get, or on_get_<suffix>).
            if method not in FRAMEWORK_METHODS and getattr(responder, "__self__", None) is (
                node.resource
            ):
                found.add((method, path))
    return found


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


def test_every_schema_in_the_document_is_valid_json_schema_2020_12() -> None:
    doc = document(False)
    assert doc["openapi"].startswith("3.1")
    schemas = list(doc["components"]["schemas"].values())
    for operations in doc["paths"].values():
        for operation in operations.values():
            for response in operation["responses"].values():
                schemas += [media["schema"] for media in response.get("content", {}).values()]
            for media in operation.get("requestBody", {}).get("content", {}).values():
                schemas.append(media["schema"])
            schemas += [param["schema"] for param in operation.get("parameters", [])]
    for schema in schemas:
        Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("production", [False, True])
def test_openapi_spec_validator_accepts_the_document(production: bool) -> None:
    validate(document(production))


@pytest.mark.parametrize("production", [False, True])
def test_every_route_is_documented_and_nothing_else(settings: Settings, production: bool) -> None:
    env = "production" if production else "test"
    app = create_app(_with_env(settings, env))
    assert routed_operations(app) == documented_operations(document(production))


def _with_env(settings: Settings, env: str) -> Settings:
    if env == "production":
        return dataclasses.replace(settings, env=env, cors_origins=("https://ftl.example",))
    return settings


async def test_the_document_is_served_publicly(api: testing.ASGIConductor) -> None:
    result = await checked(api, "GET", "/api/openapi.json")
    assert result.status_code == 200
    assert result.json == document(False)


@pytest.fixture
async def google_api(settings: Settings, market: Services, issuer: DevGoogleIssuer) -> Any:
    app_settings = dataclasses.replace(settings, google_jwks_url=issuer.jwks_url)
    async with testing.ASGIConductor(create_app(app_settings)) as conductor:
        yield conductor


def _emailed_code(pg: psycopg.Connection, address: str) -> str:
    row = pg.execute(
        "SELECT context->>'code' FROM email_outbox WHERE to_address = %s"
        " AND template = 'registration_code' ORDER BY created_at DESC LIMIT 1",
        (address,),
    ).fetchone()
    assert row is not None
    return str(row[0])


async def test_every_operation_answers_as_documented(
    google_api: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    pg_admin: psycopg.Connection,
) -> None:
    api, seen = google_api, Exercised()

    async def call(method: str, path: str, **kwargs: Any) -> testing.Result:
        return await checked(api, method, path, seen, **kwargs)

    await call("GET", "/health")
    await call("GET", "/ready")
    await call("GET", "/metrics")
    await call("GET", "/console")
    for name in ("config.json", "console.js", "console.css", "index.html"):
        await call("GET", f"/console/{name}")
    await call("GET", "/api/openapi.json")

    # Registration: Google sign-in -> code -> profile; then a known user's sign-in.
    nonce = uuid.uuid4().hex
    address = "asha@example.com"
    token = issuer.mint(address, nonce=nonce)
    started = await call("POST", "/api/auth/google", json={"idToken": token, "nonce": nonce})
    assert started.status_code == 422
    ticket = started.json["registrationTicket"]
    await call("POST", "/api/auth/google", json={"idToken": "x", "nonce": nonce})
    await call("POST", "/api/auth/google", json={"idToken": 1})
    wrong = await call(
        "POST", "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": "000000"}
    )
    assert wrong.status_code in (200, 401)
    cooldown = await call("POST", "/api/auth/resend-otp", json={"registrationTicket": ticket})
    assert cooldown.status_code == 429
    await call("POST", "/api/auth/resend-otp", json={"registrationTicket": "nope"})
    code = _emailed_code(pg_admin, address)
    verified = await call(
        "POST", "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": code}
    )
    assert verified.status_code == 200, verified.text
    profile = {"firstName": "Asha", "age": 27, "phone": "9876543210", "districtId": 7}
    bad = await call(
        "POST", "/api/auth/google/complete", json={"registrationTicket": ticket, "age": 12}
    )
    assert bad.status_code == 400
    made = await call(
        "POST", "/api/auth/google/complete", json={"registrationTicket": ticket, **profile}
    )
    assert made.status_code == 201, made.text
    nonce = uuid.uuid4().hex
    again = await call(
        "POST",
        "/api/auth/google",
        json={"idToken": issuer.mint(address, nonce=nonce), "nonce": nonce},
    )
    assert again.status_code == 200, again.text
    refresh_token = again.json["refreshToken"]

    # Sessions.
    rotated = await call("POST", "/api/auth/refresh", json={"refreshToken": refresh_token})
    assert rotated.status_code == 200
    await call("POST", "/api/auth/refresh", json={"refreshToken": refresh_token})
    await call("POST", "/api/auth/refresh", body="{", content_type="application/json")
    await call("POST", "/api/auth/logout")
    await call("POST", "/api/auth/dev", json={"displayName": ""})
    batch = await call("POST", "/api/auth/dev/batch", json={"count": 2, "prefix": "doc-"})
    assert batch.status_code == 200
    await call("POST", "/api/auth/dev/batch", json={"count": 0})
    user_id, me = await login(api, "Trader")
    admin_id, admin = await login(api, "Operator")
    pg_admin.execute("UPDATE users SET role = 'admin' WHERE id = %s", (admin_id,))

    # Accounts.
    await call("GET", "/api/me")
    await call("GET", "/api/me", headers=me)
    await call("GET", "/api/me", headers={"Authorization": "Bearer nonsense"})
    await call("POST", "/api/ws/token", headers=me)
    await call("POST", "/api/ws/token")
    await call("GET", "/api/flags")
    await call("GET", "/api/districts")
    await call("GET", "/api/public/referral/validate", params={"code": "0123abcd"})
    await call("GET", "/api/referrals", headers=me)
    await call("POST", "/api/referrals/invites", headers=me, json={"label": "Cousins"})
    await call("POST", "/api/referrals/invites", headers=me, json={"label": ""})
    await call("POST", "/api/referrals/invites", headers=me, body="x", content_type="text/plain")
    await call("GET", "/api/referrals", headers=me)

    # Market.
    listed = await call("GET", "/api/instruments", params={"position": "FWD"})
    instrument = listed.json["instruments"][0]
    await call("GET", "/api/instruments", params={"position": "XX"})
    await call("GET", f"/api/instruments/{instrument['id']}")
    await call("GET", f"/api/instruments/{uuid.uuid4()}")
    await call("GET", f"/api/instruments/{instrument['id']}/price-history", params={"limit": "5"})
    await call("GET", f"/api/instruments/{instrument['id']}/price-history", params={"limit": "0"})
    matches = await call("GET", "/api/matches")
    await call("GET", "/api/matches", params={"status": "postponed"})
    await call("GET", f"/api/matches/{matches.json['matches'][0]['id']}")
    await call("GET", f"/api/matches/{uuid.uuid4()}")

    # Trading.
    order = {
        "instrumentId": instrument["id"],
        "direction": "long",
        "lotSize": 1,
        "clientRequestId": "doc-open-1",
        "clientPrice": instrument["price"],
        "stopLoss": None,
    }
    opened = await call("POST", "/api/positions/open", headers=me, json=order)
    assert opened.status_code == 201, opened.text
    replayed = await call("POST", "/api/positions/open", headers=me, json=order)
    assert replayed.json["replayed"] is True
    await call("POST", "/api/positions/open", headers=me, json={**order, "lotSize": 2})
    await call("POST", "/api/positions/open", headers=me, json={**order, "lotSize": 1e9})
    too_big = {**order, "lotSize": 100, "clientRequestId": "doc-open-2"}
    await call("POST", "/api/positions/open", headers=me, json=too_big)
    position_id = opened.json["position"]["id"]
    await call("GET", "/api/positions", headers=me, params={"status": "open", "limit": "1"})
    await call("GET", "/api/positions", headers=me, params={"cursor": "!!"})
    await call("GET", f"/api/positions/{position_id}", headers=me)
    await call("GET", f"/api/positions/{position_id}", headers=admin)
    await call("PATCH", f"/api/positions/{position_id}", headers=me, json={"takeProfit": 10_000})
    await call("PATCH", f"/api/positions/{position_id}", headers=me, json={"takeProfit": 0.01})
    await call("GET", "/api/portfolio", headers=me)
    closed = await call(
        "DELETE", f"/api/positions/{position_id}", headers=me, params={"clientRequestId": "c1"}
    )
    assert closed.status_code == 200, closed.text
    await call(
        "DELETE", f"/api/positions/{position_id}", headers=me, params={"clientRequestId": "c2"}
    )
    await call("DELETE", f"/api/positions/{position_id}", headers=me)
    await call("GET", "/api/trades", headers=me, params={"limit": "10"})
    await call("GET", "/api/trades", headers=me, params={"limit": "many"})
    await call("GET", "/api/portfolio", headers=me)
    await call("GET", "/api/leaderboard", headers=me)
    await call("GET", "/api/leaderboard", params={"scope": "district", "districtId": "3"})
    await call("GET", "/api/leaderboard", params={"scope": "galaxy"})

    # Admin.
    await call("GET", "/api/admin/settings", headers=admin)
    await call("GET", "/api/admin/settings", headers=me)
    weights = {"scoringWeights": DEFAULT_WEIGHTS.to_json()}
    await call("PUT", "/api/admin/settings", headers=admin, json=weights)
    await call("PUT", "/api/admin/settings", headers=admin, json={"scoringWeights": 1})
    await call("PUT", "/api/admin/flags/demoBanner", headers=admin, json={"enabled": True})
    await call("PUT", "/api/admin/flags/9lives", headers=admin, json={"enabled": True})
    await call("PUT", "/api/admin/flags/demoBanner", headers=me, json={"enabled": True})
    await call("POST", "/api/admin/replay", headers=admin, json={"userId": user_id})
    await call("POST", "/api/admin/replay", headers=admin, json={"userId": str(uuid.uuid4())})
    admin_instrument = f"/api/admin/instruments/{instrument['id']}"
    await call("POST", admin_instrument, headers=admin, json={"kMod": 0.05, "isActive": True})
    await call("POST", admin_instrument, headers=admin, json={"kMod": 3})
    await call("POST", admin_instrument, headers=me, json={"isActive": False})
    await call("POST", f"/api/admin/instruments/{uuid.uuid4()}", headers=admin, json={"kMod": 0})

    # The coming-soon gate.
    await call("PUT", "/api/admin/flags/comingSoon", headers=admin, json={"enabled": True})
    await asyncio.sleep(FLAG_CACHE_S)  # NOTE: each process reads the flags at most this often
    gated = await call("GET", "/api/portfolio", headers=me)
    assert gated.status_code == 503

    missing = documented_operations(document(False)) - seen.operations()
    assert not missing, f"never exercised: {sorted(missing)}"
