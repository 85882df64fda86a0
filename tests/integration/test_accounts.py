"""Development logins, sessions (refresh rotation, reuse, logout), /api/me, flags, the coming-soon
gate, districts and referrals, over HTTP against real Redis and PostgreSQL (SPEC §3.1)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from falcon import testing

from ftl.accounts import sessions
from ftl.accounts.users import Account, get_account
from ftl.core.config import Settings
from ftl.store.auth.tokens import Tokens, TokenType
from ftl.store.db.models import UserRole
from ftl.store.services import Services
from tests.integration.test_web import assert_envelope
from web.app import create_app

JSON = "application/json"


@pytest.fixture
async def client(
    settings: Settings, services: Services, districts: None
) -> AsyncIterator[testing.ASGIConductor]:
    async with testing.ASGIConductor(create_app(settings)) as conductor:
        yield conductor


async def dev_login(client: testing.ASGIConductor, name: str) -> dict[str, Any]:
    result = await client.simulate_post("/api/auth/dev", json={"displayName": name})
    assert result.status_code == 200, result.text
    body: dict[str, Any] = result.json
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_admin(pg_admin: psycopg.Connection, services: Services, user_id: str) -> Account:
    pg_admin.execute("UPDATE users SET role = 'admin' WHERE id = %s", (user_id,))
    account = await get_account(services.engine, uuid.UUID(user_id))
    assert account is not None and account.role is UserRole.admin
    return account


async def test_dev_login_creates_a_synthetic_user_with_a_wallet(
    client: testing.ASGIConductor, pg_admin: psycopg.Connection
) -> None:
    result = await client.simulate_post("/api/auth/dev", json={"displayName": " Anna "})
    assert result.status_code == 200, result.text
    body = result.json
    assert set(body) == {"user", "accessToken", "refreshToken", "expiresIn"}
    assert body["expiresIn"] == 900
    assert body["user"]["displayName"] == "Anna"
    assert body["user"]["isSynthetic"] is True
    assert 1 <= body["user"]["districtId"] <= 14
    cookies = result.cookies
    assert cookies["ftl_access"].value == body["accessToken"]
    assert cookies["ftl_access"].http_only and cookies["ftl_access"].same_site == "Lax"
    assert cookies["ftl_refresh"].path == "/api/auth"
    assert not cookies["ftl_access"].secure  # Secure only in production
    wallet = pg_admin.execute(
        "SELECT balance FROM wallets WHERE user_id = %s", (body["user"]["id"],)
    ).fetchone()
    assert wallet is not None and wallet[0] == Decimal("10000.00")
    again = await dev_login(client, "Anna")
    assert again["user"]["id"] == body["user"]["id"]
    assert pg_admin.execute("SELECT count(*) FROM users").fetchone() == (1,)


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"displayName": ""}, "validation_error", "displayName"),
        ({"displayName": "   "}, "validation_error", "displayName"),
        ({"displayName": "x" * 51}, "validation_error", "displayName"),
        ({"displayName": 7}, "validation_error", "displayName"),
        ({}, "validation_error", "displayName"),
        ({"displayName": "A", "role": "admin"}, "unknown_field", "role"),
    ],
)
async def test_dev_login_refuses_bad_input_and_writes_nothing(
    client: testing.ASGIConductor,
    pg_admin: psycopg.Connection,
    body: dict[str, Any],
    code: str,
    field: str,
) -> None:
    error = assert_envelope(await client.simulate_post("/api/auth/dev", json=body), 400, code)
    assert error["details"]["field"] == field
    assert pg_admin.execute("SELECT count(*) FROM users").fetchone() == (0,)


async def test_dev_batch_creates_a_thousand_users_once(
    client: testing.ASGIConductor, pg_admin: psycopg.Connection, services: Services
) -> None:
    result = await client.simulate_post("/api/auth/dev/batch", json={"count": 1000})
    assert result.status_code == 200, result.text
    users = result.json["users"]
    assert len(users) == 1000
    assert [u["user"]["displayName"] for u in users[:2]] == ["bot-0001", "bot-0002"]
    assert len({u["user"]["referralCode"] for u in users}) == 1000
    claims = services.tokens.verify(users[-1]["accessToken"], TokenType.ACCESS)
    assert claims.sub == users[-1]["user"]["id"]
    counts = pg_admin.execute(
        "SELECT (SELECT count(*) FROM users WHERE is_synthetic),"
        " (SELECT count(*) FROM wallets WHERE balance = 10000)"
    ).fetchone()
    assert counts == (1000, 1000)
    again = await client.simulate_post("/api/auth/dev/batch", json={"count": 3})
    assert [u["user"]["id"] for u in again.json["users"]] == [u["user"]["id"] for u in users[:3]]
    assert pg_admin.execute("SELECT count(*) FROM users").fetchone() == (1000,)


@pytest.mark.parametrize(
    "body",
    [{"count": 0}, {"count": 1001}, {"count": "5"}, {"count": True}, {"count": 2.5}, {}],
)
async def test_dev_batch_count_is_1_to_1000(
    client: testing.ASGIConductor, pg_admin: psycopg.Connection, body: dict[str, Any]
) -> None:
    result = await client.simulate_post("/api/auth/dev/batch", json=body)
    assert assert_envelope(result, 400, "validation_error")["details"]["field"] == "count"
    assert pg_admin.execute("SELECT count(*) FROM users").fetchone() == (0,)


async def test_dev_routes_are_absent_in_production(settings: Settings, services: Services) -> None:
    production = dataclasses.replace(settings, env="production")
    async with testing.ASGIConductor(create_app(production)) as conductor:
        for path, body in (("/api/auth/dev", {"displayName": "A"}), ("/api/auth/dev/batch", {})):
            assert_envelope(await conductor.simulate_post(path, json=body), 404, "not_found")


async def test_refresh_rotates_and_a_replayed_token_kills_the_family(
    client: testing.ASGIConductor,
) -> None:
    login = await dev_login(client, "Rotor")
    first = await client.simulate_post(
        "/api/auth/refresh", json={"refreshToken": login["refreshToken"]}
    )
    assert first.status_code == 200, first.text
    rotated = first.json
    assert rotated["refreshToken"] != login["refreshToken"]
    assert first.cookies["ftl_refresh"].value == rotated["refreshToken"]
    # The cookie alone also refreshes.
    second = await client.simulate_post(
        "/api/auth/refresh", cookies={"ftl_refresh": rotated["refreshToken"]}
    )
    assert second.status_code == 200, second.text
    newest = second.json
    assert (await client.simulate_get("/api/me", headers=bearer(newest["accessToken"]))).json[
        "loggedIn"
    ]
    # The first token again: reuse. It fails, and so does the newest token of the family.
    replay = await client.simulate_post(
        "/api/auth/refresh", json={"refreshToken": login["refreshToken"]}
    )
    assert_envelope(replay, 401, "unauthorized")
    dead = await client.simulate_post(
        "/api/auth/refresh", json={"refreshToken": newest["refreshToken"]}
    )
    assert_envelope(dead, 401, "unauthorized")
    # Access tokens of the dead family stop working too.
    me = await client.simulate_get("/api/me", headers=bearer(newest["accessToken"]))
    assert_envelope(me, 401, "unauthorized")


async def test_refresh_refuses_an_access_token_and_nothing_at_all(
    client: testing.ASGIConductor,
) -> None:
    login = await dev_login(client, "Mixer")
    wrong_type = await client.simulate_post(
        "/api/auth/refresh", json={"refreshToken": login["accessToken"]}
    )
    assert_envelope(wrong_type, 401, "unauthorized")
    assert_envelope(await client.simulate_post("/api/auth/refresh"), 401, "unauthorized")
    still = await client.simulate_post(
        "/api/auth/refresh", json={"refreshToken": login["refreshToken"]}
    )
    assert still.status_code == 200


async def test_logout_revokes_both_tokens_clears_cookies_and_is_idempotent(
    client: testing.ASGIConductor, services: Services
) -> None:
    login = await dev_login(client, "Leaver")
    out = await client.simulate_post(
        "/api/auth/logout",
        headers=bearer(login["accessToken"]),
        json={"refreshToken": login["refreshToken"]},
    )
    assert out.status_code == 204
    assert out.cookies["ftl_access"].value == "" and out.cookies["ftl_refresh"].value == ""
    access = services.tokens.verify(login["accessToken"], TokenType.ACCESS)
    ttl = await services.redis.ttl(f"jti_block:{access.jti}")
    assert 0 < ttl <= access.exp - access.iat
    assert_envelope(
        await client.simulate_get("/api/me", headers=bearer(login["accessToken"])),
        401,
        "unauthorized",
    )
    refresh = await client.simulate_post(
        "/api/auth/refresh", json={"refreshToken": login["refreshToken"]}
    )
    assert_envelope(refresh, 401, "unauthorized")
    again = await client.simulate_post("/api/auth/logout", headers=bearer(login["accessToken"]))
    assert again.status_code == 204
    assert (await client.simulate_post("/api/auth/logout")).status_code == 204


async def test_me_answers_logged_out_and_logged_in(client: testing.ASGIConductor) -> None:
    assert (await client.simulate_get("/api/me")).json == {"loggedIn": False}
    login = await dev_login(client, "Mia")
    by_cookie = await client.simulate_get("/api/me", cookies={"ftl_access": login["accessToken"]})
    body = by_cookie.json
    assert body["loggedIn"] is True
    assert body["user"]["id"] == login["user"]["id"]
    assert body["wallet"]["balance"] == 10000.0
    assert body["referralCode"] == login["user"]["referralCode"]
    assert_envelope(
        await client.simulate_get("/api/me", headers=bearer("junk")), 401, "unauthorized"
    )


async def test_an_expired_access_token_says_token_expired(
    client: testing.ASGIConductor, settings: Settings
) -> None:
    login = await dev_login(client, "Late")
    past = Tokens(
        settings.jwt_private_key_b64,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        clock=lambda: 1_000_000.0,
    )
    token, _ = past.issue(TokenType.ACCESS, login["user"]["id"])
    assert_envelope(
        await client.simulate_get("/api/me", headers=bearer(token)), 401, "token_expired"
    )


@pytest.mark.parametrize("typ", [TokenType.REFRESH, TokenType.WS, TokenType.REGISTRATION])
async def test_only_an_access_token_opens_the_api(
    client: testing.ASGIConductor, services: Services, typ: TokenType
) -> None:
    login = await dev_login(client, "Typer")
    token, _ = services.tokens.issue(typ, login["user"]["id"])
    for path in ("/api/me", "/api/referrals"):
        assert_envelope(await client.simulate_get(path, headers=bearer(token)), 401, "unauthorized")
    assert_envelope(
        await client.simulate_post("/api/ws/token", headers=bearer(token)), 401, "unauthorized"
    )


async def test_ws_token_is_a_60_second_ws_token(
    client: testing.ASGIConductor, services: Services
) -> None:
    login = await dev_login(client, "Socket")
    result = await client.simulate_post("/api/ws/token", headers=bearer(login["accessToken"]))
    assert result.status_code == 200, result.text
    assert result.json["expiresIn"] == 60
    claims = services.tokens.verify(result.json["token"], TokenType.WS)
    assert claims.sub == login["user"]["id"]
    assert_envelope(await client.simulate_post("/api/ws/token"), 401, "unauthorized")


async def test_flags_admin_only_and_the_coming_soon_gate(
    client: testing.ASGIConductor, services: Services, pg_admin: psycopg.Connection
) -> None:
    pg_admin.execute(
        "INSERT INTO feature_flags (name, enabled) VALUES ('comingSoon', false),"
        " ('maintenanceMode', false)"
    )
    pg_admin.execute(
        "INSERT INTO feature_flags (name, enabled, is_public) VALUES ('beta', true, false)"
    )
    assert (await client.simulate_get("/api/flags")).json == {
        "comingSoon": False,
        "maintenanceMode": False,
    }
    user = await dev_login(client, "Plain")
    boss = await dev_login(client, "Boss")
    admin = await sessions.start(services, await make_admin(pg_admin, services, boss["user"]["id"]))
    body = {"enabled": True}
    forbidden = await client.simulate_put(
        "/api/admin/flags/comingSoon", json=body, headers=bearer(user["accessToken"])
    )
    assert_envelope(forbidden, 403, "forbidden")
    assert_envelope(
        await client.simulate_put("/api/admin/flags/comingSoon", json=body), 401, "unauthorized"
    )
    changed = await client.simulate_put(
        "/api/admin/flags/comingSoon", json=body, headers=bearer(admin.access_token)
    )
    assert changed.status_code == 200, changed.text
    assert changed.json == {"name": "comingSoon", "enabled": True, "isPublic": True}
    assert (await client.simulate_get("/api/flags")).json["comingSoon"] is True
    gated = await client.simulate_get("/api/referrals", headers=bearer(user["accessToken"]))
    assert_envelope(gated, 503, "coming_soon")
    me = await client.simulate_get("/api/me", headers=bearer(user["accessToken"]))
    assert me.status_code == 200 and me.json["loggedIn"] is True
    as_admin = await client.simulate_get("/api/referrals", headers=bearer(admin.access_token))
    assert as_admin.status_code == 200
    await client.simulate_put(
        "/api/admin/flags/comingSoon", json={"enabled": False}, headers=bearer(admin.access_token)
    )
    open_again = await client.simulate_get("/api/referrals", headers=bearer(user["accessToken"]))
    assert open_again.status_code == 200


@pytest.mark.parametrize(
    ("name", "body", "code", "field"),
    [
        ("comingSoon", {"enabled": "yes"}, "validation_error", "enabled"),
        ("comingSoon", {}, "validation_error", "enabled"),
        ("comingSoon", {"enabled": True, "isPublic": 1}, "validation_error", "isPublic"),
        ("comingSoon", {"enabled": True, "colour": "red"}, "unknown_field", "colour"),
        ("9lives", {"enabled": True}, "validation_error", "name"),
    ],
)
async def test_admin_flag_input_is_validated_and_nothing_changes(
    client: testing.ASGIConductor,
    services: Services,
    pg_admin: psycopg.Connection,
    name: str,
    body: dict[str, Any],
    code: str,
    field: str,
) -> None:
    boss = await dev_login(client, "Boss")
    admin = await sessions.start(services, await make_admin(pg_admin, services, boss["user"]["id"]))
    result = await client.simulate_put(
        f"/api/admin/flags/{name}", json=body, headers=bearer(admin.access_token)
    )
    assert assert_envelope(result, 400, code)["details"]["field"] == field
    assert pg_admin.execute("SELECT count(*) FROM feature_flags").fetchone() == (0,)


async def test_flags_come_back_after_redis_forgets_them(
    client: testing.ASGIConductor, services: Services, pg_admin: psycopg.Connection
) -> None:
    pg_admin.execute("INSERT INTO feature_flags (name, enabled) VALUES ('comingSoon', true)")
    user = await dev_login(client, "Waiter")
    gated = await client.simulate_get("/api/referrals", headers=bearer(user["accessToken"]))
    assert_envelope(gated, 503, "coming_soon")
    assert await services.redis.hget("feature_flags", "comingSoon") == "1"


async def test_districts_lists_the_fourteen(client: testing.ASGIConductor) -> None:
    result = await client.simulate_get("/api/districts")
    districts = result.json["districts"]
    assert [d["id"] for d in districts] == list(range(1, 15))
    assert districts[0]["name"] == "Thiruvananthapuram" and districts[13]["name"] == "Kasaragod"


async def test_referral_codes_invites_and_validation(
    client: testing.ASGIConductor, pg_admin: psycopg.Connection
) -> None:
    owner = await dev_login(client, "Owner")
    code = owner["user"]["referralCode"]
    assert len(code) == 8 and int(code, 16) >= 0
    # Codes are lowercase hex: an uppercase spelling is not a code (even of an existing one).
    shouted = code.upper() if code.upper() != code else "ABCDEF12"
    for candidate, valid in ((code, True), ("0000000g", False), ("", False), (shouted, False)):
        result = await client.simulate_get(
            "/api/public/referral/validate", params={"code": candidate} if candidate else None
        )
        assert result.status_code == 200
        assert result.json == {"valid": valid}
    made = await client.simulate_post(
        "/api/referrals/invites",
        json={"label": "Football club"},
        headers=bearer(owner["accessToken"]),
    )
    assert made.status_code == 201, made.text
    invite = made.json
    assert invite["label"] == "Football club" and invite["signups"] == 0
    friend = await dev_login(client, "Friend")
    pg_admin.execute(
        "INSERT INTO referrals (id, referrer_id, referred_id, invite_id, paid_at, bonus)"
        " VALUES (gen_random_uuid(), %s, %s, %s, now(), 500)",
        (owner["user"]["id"], friend["user"]["id"], invite["id"]),
    )
    summary = await client.simulate_get("/api/referrals", headers=bearer(owner["accessToken"]))
    assert summary.json == {
        "code": code,
        "invites": [{**invite, "signups": 1}],
        "referredCount": 1,
        "paidCount": 1,
        "bonusTotal": 500.0,
    }
    again = await client.simulate_get("/api/me", headers=bearer(owner["accessToken"]))
    assert again.json["referralCode"] == code  # stable


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"label": ""}, "validation_error"),
        ({"label": "x" * 81}, "validation_error"),
        ({"label": 5}, "validation_error"),
        ({"label": "a", "x": 1}, "unknown_field"),
    ],
)
async def test_invite_labels_are_validated(
    client: testing.ASGIConductor,
    pg_admin: psycopg.Connection,
    body: dict[str, Any],
    code: str,
) -> None:
    owner = await dev_login(client, "Owner")
    result = await client.simulate_post(
        "/api/referrals/invites", json=body, headers=bearer(owner["accessToken"])
    )
    assert_envelope(result, 400, code)
    assert pg_admin.execute("SELECT count(*) FROM referral_invites").fetchone() == (0,)
    assert_envelope(
        await client.simulate_post("/api/referrals/invites", json={"label": "a"}),
        401,
        "unauthorized",
    )


@pytest.mark.parametrize("env", ["development", "production"])
async def test_logout_clears_cookies_with_the_attributes_that_set_them(
    settings: Settings, services: Services, env: str
) -> None:
    app_settings = dataclasses.replace(settings, env=env)
    async with testing.ASGIConductor(create_app(app_settings)) as conductor:
        out = await conductor.simulate_post("/api/auth/logout")
    assert out.status_code == 204
    for name, path in (("ftl_access", "/"), ("ftl_refresh", "/api/auth")):
        cleared = out.cookies[name]
        assert cleared.value == "" and cleared.path == path
        assert cleared.expires is not None and cleared.expires < datetime.now(UTC)
        assert cleared.http_only and cleared.same_site == "Lax"
        assert cleared.secure == app_settings.is_production
