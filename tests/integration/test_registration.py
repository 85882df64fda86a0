"""Registration end to end over HTTP (SPEC §3.1, §4, §5.5): the local Google issuer (`ftl dev
google`) signs real RS256 ID tokens, a real local SMTP server receives the code, and the code read
out of the delivered email finishes the registration."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from falcon import testing

from ftl.accounts.email import deliver
from ftl.core.config import Settings
from ftl.ops.dev_google import DevGoogleIssuer
from ftl.store.auth.tokens import TokenType
from ftl.store.services import Services
from tests.e2e.conftest import free_port
from tests.integration.test_web import assert_envelope
from tests.unit.test_tokens import forge
from web.app import create_app

PROFILE = {"firstName": "Asha", "lastName": "Menon", "age": 27, "districtId": 7}


class Inbox:
    """aiosmtpd handler: every delivered message, parsed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"

    def code_for(self, address: str) -> str:
        """The 6-digit code of the newest code email to `address`, read from its text part."""
        for message in reversed(self.messages):
            if message["To"] == address and "code" in message["Subject"]:
                part = message.get_body(preferencelist=("plain",))
                assert part is not None
                found = re.search(r"\b(\d{6})\b", part.get_content())
                assert found is not None
                return found.group(1)
        raise AssertionError(f"no code email to {address}")


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    handler = Inbox(free_port())
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    yield handler
    controller.stop()


@pytest.fixture
def app_settings(settings: Settings, issuer: DevGoogleIssuer, inbox: Inbox) -> Settings:
    return dataclasses.replace(
        settings,
        google_jwks_url=issuer.jwks_url,
        smtp_url=f"smtp://127.0.0.1:{inbox.port}",
    )


@pytest.fixture
async def client(
    app_settings: Settings, services: Services, districts: None
) -> AsyncIterator[testing.ASGIConductor]:
    async with testing.ASGIConductor(create_app(app_settings)) as conductor:
        yield conductor


async def deliver_pending(services: Services, settings: Settings) -> int:
    """What the `email` actor does for each enqueued row."""
    async with services.engine.connect() as conn:
        rows = await conn.exec_driver_sql(
            "SELECT id FROM email_outbox WHERE status = 'pending' ORDER BY created_at"
        )
        ids = [row[0] for row in rows]
    for outbox_id in ids:
        await deliver(services.engine, settings, outbox_id)
    return len(ids)


def nonce() -> str:
    return uuid.uuid4().hex


async def sign_in(
    client: testing.ASGIConductor, issuer: DevGoogleIssuer, address: str, **claims: Any
) -> testing.Result:
    value = nonce()
    token = issuer.mint(address, nonce=value, **claims)
    return await client.simulate_post("/api/auth/google", json={"idToken": token, "nonce": value})


async def ticket_with_code(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    inbox: Inbox,
    services: Services,
    settings: Settings,
    address: str,
) -> tuple[str, str]:
    started = await sign_in(client, issuer, address)
    assert started.status_code == 422, started.text
    assert await deliver_pending(services, settings) == 1
    return started.json["registrationTicket"], inbox.code_for(address)


async def verified_ticket(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    inbox: Inbox,
    services: Services,
    settings: Settings,
    address: str,
) -> str:
    ticket, code = await ticket_with_code(client, issuer, inbox, services, settings, address)
    ok = await client.simulate_post(
        "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": code}
    )
    assert ok.status_code == 200, ok.text
    return ticket


def count(pg_admin: psycopg.Connection, table: str) -> int:
    row = pg_admin.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


async def test_full_registration_then_login_refresh_rotation_and_logout(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    inbox: Inbox,
    services: Services,
    app_settings: Settings,
    pg_admin: psycopg.Connection,
) -> None:
    address = "asha@example.com"
    started = await sign_in(client, issuer, address, given_name="Asha", family_name="Menon")
    assert started.status_code == 422, started.text
    assert set(started.json) == {
        "needsProfile",
        "registrationTicket",
        "email",
        "givenName",
        "familyName",
    }
    assert started.json["needsProfile"] is True
    assert (started.json["email"], started.json["givenName"]) == (address, "Asha")
    ticket = started.json["registrationTicket"]
    assert await deliver_pending(services, app_settings) == 1
    code = inbox.code_for(address)
    html = inbox.messages[-1].get_body(preferencelist=("html",))
    assert html is not None and f"<strong>{code}</strong>" in html.get_content()
    # APPSEC: the code is stored hashed only.
    assert code not in str(await services.redis.hgetall(f"otp:{ticket_jti(services, ticket)}"))

    wrong = "000000" if code != "000000" else "111111"
    miss = await client.simulate_post(
        "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": wrong}
    )
    assert assert_envelope(miss, 401, "invalid_otp")["details"] == {"attemptsLeft": 4}
    early = await client.simulate_post(
        "/api/auth/google/complete",
        json={"registrationTicket": ticket, "phone": "9876543210", **PROFILE},
    )
    assert_envelope(early, 403, "otp_not_verified")
    ok = await client.simulate_post(
        "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": code}
    )
    assert ok.status_code == 200 and ok.json == {"verified": True}

    done = await client.simulate_post(
        "/api/auth/google/complete",
        json={"registrationTicket": ticket, "phone": "9876543210", **PROFILE},
    )
    assert done.status_code == 201, done.text
    login = done.json
    assert set(login) == {"user", "accessToken", "refreshToken", "expiresIn"}
    assert login["user"]["displayName"] == "Asha Menon"
    assert login["user"]["email"] == address and login["user"]["districtId"] == 7
    assert done.cookies["ftl_access"].value == login["accessToken"]
    user_id = login["user"]["id"]
    wallet = pg_admin.execute("SELECT balance FROM wallets WHERE user_id = %s", (user_id,))
    assert str(wallet.fetchone()[0]) == "10000.00"  # type: ignore[index]
    assert await deliver_pending(services, app_settings) == 1
    welcome = inbox.messages[-1]
    assert welcome["To"] == address and "Welcome" in welcome["Subject"]
    assert login["user"]["referralCode"] in welcome.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    outbox = pg_admin.execute(
        "SELECT template, status, context FROM email_outbox ORDER BY created_at"
    ).fetchall()
    assert [(t, s) for t, s, _ in outbox] == [("registration_code", "sent"), ("welcome", "sent")]
    assert "code" not in outbox[0][2]  # no copy of a sent code is kept

    spent = await client.simulate_post(
        "/api/auth/google/complete",
        json={"registrationTicket": ticket, "phone": "9876543211", **PROFILE},
    )
    assert_envelope(spent, 401, "unauthorized")

    again = await sign_in(client, issuer, address)
    assert again.status_code == 200, again.text
    assert again.json["user"]["id"] == user_id
    me = await client.simulate_get("/api/me", cookies={"ftl_access": again.json["accessToken"]})
    assert me.json["user"]["id"] == user_id and me.json["wallet"]["balance"] == 10000.0

    old_refresh = again.json["refreshToken"]
    rotated = await client.simulate_post("/api/auth/refresh", cookies={"ftl_refresh": old_refresh})
    assert rotated.status_code == 200, rotated.text
    new_refresh = rotated.json["refreshToken"]
    out = await client.simulate_post(
        "/api/auth/logout",
        headers={"Authorization": f"Bearer {rotated.json['accessToken']}"},
        cookies={"ftl_refresh": new_refresh},
    )
    assert out.status_code == 204
    replay = await client.simulate_post("/api/auth/refresh", json={"refreshToken": old_refresh})
    assert_envelope(replay, 401, "unauthorized")
    assert_envelope(
        await client.simulate_post("/api/auth/refresh", json={"refreshToken": new_refresh}),
        401,
        "unauthorized",
    )
    # The first session (from the registration) is a separate family and still refreshes.
    first = await client.simulate_post(
        "/api/auth/refresh", json={"refreshToken": login["refreshToken"]}
    )
    assert first.status_code == 200


def ticket_jti(services: Services, ticket: str) -> str:
    return services.tokens.verify(ticket, TokenType.REGISTRATION).jti


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"aud": "someone-else.apps.googleusercontent.com"}, "unauthorized"),
        ({"email_verified": False}, "unauthorized"),
        ({"iss": "https://evil.example.com"}, "unauthorized"),
        ({"expires_in_s": -120}, "token_expired"),
    ],
)
async def test_google_tokens_with_a_bad_claim_are_refused(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    pg_admin: psycopg.Connection,
    claims: dict[str, Any],
    code: str,
) -> None:
    result = await sign_in(client, issuer, "mallory@example.com", **claims)
    assert_envelope(result, 401, code)
    assert count(pg_admin, "email_outbox") == 0


async def test_a_reused_or_mismatched_nonce_is_refused(
    client: testing.ASGIConductor, issuer: DevGoogleIssuer, services: Services
) -> None:
    value = nonce()
    token = issuer.mint("nina@example.com", nonce=value)
    mismatched = await client.simulate_post(
        "/api/auth/google", json={"idToken": token, "nonce": nonce()}
    )
    assert_envelope(mismatched, 401, "unauthorized")
    first = await client.simulate_post("/api/auth/google", json={"idToken": token, "nonce": value})
    assert first.status_code == 422
    replay = await client.simulate_post("/api/auth/google", json={"idToken": token, "nonce": value})
    assert_envelope(replay, 401, "unauthorized")
    ttl = await services.redis.ttl(f"google_nonce:{hashlib.sha256(value.encode()).hexdigest()}")
    assert 0 < ttl <= 300


async def test_a_google_token_from_another_key_is_refused(
    client: testing.ASGIConductor, issuer: DevGoogleIssuer
) -> None:
    stranger = DevGoogleIssuer()
    try:
        unknown_kid = await sign_in(client, stranger, "eve@example.com")
        assert_envelope(unknown_kid, 401, "unauthorized")
        stranger.kid = issuer.kid  # our kid, someone else's key
        assert_envelope(await sign_in(client, stranger, "eve@example.com"), 401, "unauthorized")
    finally:
        stranger.server.server_close()


async def test_hs256_google_token_signed_with_the_public_key_is_refused(
    client: testing.ASGIConductor, issuer: DevGoogleIssuer
) -> None:
    value = nonce()
    payload = {
        "iss": "https://accounts.google.com",
        "aud": issuer.client_id,
        "sub": "1",
        "email": "eve@example.com",
        "email_verified": True,
        "nonce": value,
        "iat": 1_900_000_000,
        "exp": 4_000_000_000,
    }
    for secret in (issuer.jwks["keys"][0]["n"].encode(), b""):
        token = forge({"alg": "HS256", "kid": issuer.kid}, payload, secret)
        result = await client.simulate_post(
            "/api/auth/google", json={"idToken": token, "nonce": value}
        )
        assert_envelope(result, 401, "unauthorized")
    none = forge({"alg": "none", "kid": issuer.kid}, payload, None)
    result = await client.simulate_post("/api/auth/google", json={"idToken": none, "nonce": value})
    assert_envelope(result, 401, "unauthorized")


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"idToken": "", "nonce": "n" * 16}, "validation_error", "idToken"),
        ({"idToken": "x.y.z", "nonce": "short"}, "validation_error", "nonce"),
        ({"idToken": "x.y.z", "nonce": "n" * 16, "extra": 1}, "unknown_field", "extra"),
    ],
)
async def test_google_sign_in_input_is_validated(
    client: testing.ASGIConductor, body: dict[str, Any], code: str, field: str
) -> None:
    result = await client.simulate_post("/api/auth/google", json=body)
    assert assert_envelope(result, 400, code)["details"]["field"] == field


async def test_five_wrong_codes_kill_the_ticket(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    inbox: Inbox,
    services: Services,
    app_settings: Settings,
) -> None:
    ticket, code = await ticket_with_code(
        client, issuer, inbox, services, app_settings, "tries@example.com"
    )
    wrong = "000000" if code != "000000" else "111111"
    lefts = []
    for _ in range(5):
        result = await client.simulate_post(
            "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": wrong}
        )
        lefts.append(assert_envelope(result, 401, "invalid_otp")["details"]["attemptsLeft"])
    assert lefts == [4, 3, 2, 1, 0]
    right = await client.simulate_post(
        "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": code}
    )
    assert_envelope(right, 401, "unauthorized")
    resend = await client.simulate_post("/api/auth/resend-otp", json={"registrationTicket": ticket})
    assert_envelope(resend, 401, "unauthorized")


@pytest.mark.parametrize("otp", ["12345", "1234567", "12a456", 123456, None, "１２３４５６"])
async def test_a_malformed_code_is_400_and_spends_no_attempt(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    inbox: Inbox,
    services: Services,
    app_settings: Settings,
    otp: object,
) -> None:
    ticket, _ = await ticket_with_code(
        client, issuer, inbox, services, app_settings, "typo@example.com"
    )
    result = await client.simulate_post(
        "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": otp}
    )
    assert assert_envelope(result, 400, "validation_error")["details"]["field"] == "otp"
    left = await services.redis.hget(f"otp:{ticket_jti(services, ticket)}", "attemptsLeft")
    assert left == "5"


async def test_resend_has_a_60_second_cooldown_and_replaces_the_code(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    inbox: Inbox,
    services: Services,
    app_settings: Settings,
) -> None:
    address = "again@example.com"
    ticket, first_code = await ticket_with_code(
        client, issuer, inbox, services, app_settings, address
    )
    soon = await client.simulate_post("/api/auth/resend-otp", json={"registrationTicket": ticket})
    assert_envelope(soon, 429, "rate_limited")
    assert 1 <= int(soon.headers["retry-after"]) <= 60
    assert await deliver_pending(services, app_settings) == 0
    # The minute passes (the cooldown key expires).
    await services.redis.delete(f"otp_cooldown:{ticket_jti(services, ticket)}")
    later = await client.simulate_post("/api/auth/resend-otp", json={"registrationTicket": ticket})
    assert later.status_code == 200, later.text
    assert await deliver_pending(services, app_settings) == 1
    second_code = inbox.code_for(address)
    if first_code != second_code:
        stale = await client.simulate_post(
            "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": first_code}
        )
        assert_envelope(stale, 401, "invalid_otp")
    ok = await client.simulate_post(
        "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": second_code}
    )
    assert ok.status_code == 200


async def test_an_expired_code_says_so(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    inbox: Inbox,
    services: Services,
    app_settings: Settings,
) -> None:
    ticket, code = await ticket_with_code(
        client, issuer, inbox, services, app_settings, "slow@example.com"
    )
    jti = ticket_jti(services, ticket)
    assert 0 < await services.redis.ttl(f"otp:{jti}") <= 300
    await services.redis.delete(f"otp:{jti}")  # the 5 minutes pass
    result = await client.simulate_post(
        "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": code}
    )
    assert_envelope(result, 401, "otp_expired")


@pytest.mark.parametrize("ticket", [None, "", "not-a-token"])
async def test_otp_routes_need_a_ticket(client: testing.ASGIConductor, ticket: object) -> None:
    for path, body in (
        ("/api/auth/verify-otp", {"registrationTicket": ticket, "otp": "123456"}),
        ("/api/auth/resend-otp", {"registrationTicket": ticket}),
        ("/api/auth/google/complete", {"registrationTicket": ticket, **PROFILE}),
    ):
        assert_envelope(await client.simulate_post(path, json=body), 401, "unauthorized")


async def test_an_access_token_is_not_a_registration_ticket(
    client: testing.ASGIConductor, services: Services
) -> None:
    access, _ = services.tokens.issue(TokenType.ACCESS, str(uuid.uuid4()))
    result = await client.simulate_post(
        "/api/auth/verify-otp", json={"registrationTicket": access, "otp": "123456"}
    )
    assert_envelope(result, 401, "unauthorized")


PHONE = "9876543210"


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"firstName": ""}, "validation_error", "firstName"),
        ({"firstName": "   "}, "validation_error", "firstName"),
        ({"firstName": "x" * 51}, "validation_error", "firstName"),
        ({"firstName": None}, "validation_error", "firstName"),
        ({"firstName": 5}, "validation_error", "firstName"),
        ({"lastName": "x" * 51}, "validation_error", "lastName"),
        ({"lastName": "  "}, "validation_error", "lastName"),
        ({"lastName": 7}, "validation_error", "lastName"),
        ({"age": 17}, "validation_error", "age"),
        ({"age": 121}, "validation_error", "age"),
        ({"age": "30"}, "validation_error", "age"),
        ({"age": 30.5}, "validation_error", "age"),
        ({"age": True}, "validation_error", "age"),
        ({"age": None}, "validation_error", "age"),
        ({"phone": "5876543210"}, "validation_error", "phone"),
        ({"phone": "987654321"}, "validation_error", "phone"),
        ({"phone": "98765432101"}, "validation_error", "phone"),
        ({"phone": "98765 43210"}, "validation_error", "phone"),
        ({"phone": "+919876543210"}, "validation_error", "phone"),
        ({"phone": "९८७६५४३२१०"}, "validation_error", "phone"),
        ({"phone": 9876543210}, "validation_error", "phone"),
        ({"districtId": 0}, "validation_error", "districtId"),
        ({"districtId": 15}, "validation_error", "districtId"),
        ({"districtId": "7"}, "validation_error", "districtId"),
        ({"referralCode": "zzzzzzzz"}, "validation_error", "referralCode"),
        ({"referralCode": "00000000"}, "validation_error", "referralCode"),
        ({"inviteId": str(uuid.uuid4())}, "validation_error", "inviteId"),
        ({"nickname": "A"}, "unknown_field", "nickname"),
    ],
)
async def test_every_profile_rule_refuses_and_writes_nothing(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    inbox: Inbox,
    services: Services,
    app_settings: Settings,
    pg_admin: psycopg.Connection,
    change: dict[str, Any],
    code: str,
    field: str,
) -> None:
    ticket = await verified_ticket(client, issuer, inbox, services, app_settings, "r@example.com")
    outbox_before = count(pg_admin, "email_outbox")
    body = {"registrationTicket": ticket, "phone": PHONE, **PROFILE, **change}
    result = await client.simulate_post("/api/auth/google/complete", json=body)
    assert assert_envelope(result, 400, code)["details"]["field"] == field
    assert count(pg_admin, "users") == 0 and count(pg_admin, "wallets") == 0
    assert count(pg_admin, "email_outbox") == outbox_before
    # The ticket survives a rejected profile: the corrected one goes through.
    fixed = {"registrationTicket": ticket, "phone": PHONE, **PROFILE}
    assert (await client.simulate_post("/api/auth/google/complete", json=fixed)).status_code == 201


async def test_last_name_is_optional(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    inbox: Inbox,
    services: Services,
    app_settings: Settings,
) -> None:
    ticket = await verified_ticket(client, issuer, inbox, services, app_settings, "o@example.com")
    body = {"registrationTicket": ticket, "phone": PHONE, **PROFILE}
    del body["lastName"]
    result = await client.simulate_post("/api/auth/google/complete", json=body)
    assert result.status_code == 201, result.text
    assert result.json["user"]["lastName"] is None
    assert result.json["user"]["displayName"] == "Asha"


async def test_a_duplicate_phone_is_409_even_when_concurrent(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    inbox: Inbox,
    services: Services,
    app_settings: Settings,
    pg_admin: psycopg.Connection,
) -> None:
    tickets = [
        await verified_ticket(client, issuer, inbox, services, app_settings, f"p{i}@example.com")
        for i in range(4)
    ]
    results = await asyncio.gather(
        *(
            client.simulate_post(
                "/api/auth/google/complete",
                json={"registrationTicket": ticket, "phone": PHONE, **PROFILE},
            )
            for ticket in tickets
        )
    )
    statuses = sorted(result.status_code for result in results)
    assert statuses == [201, 409, 409, 409]
    for result in results:
        if result.status_code == 409:
            assert_envelope(result, 409, "phone_taken")
    assert count(pg_admin, "users") == 1 and count(pg_admin, "wallets") == 1
    outbox = pg_admin.execute("SELECT count(*) FROM email_outbox WHERE template = 'welcome'")
    assert outbox.fetchone() == (1,)


async def test_the_referral_is_recorded_at_signup(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    inbox: Inbox,
    services: Services,
    app_settings: Settings,
    pg_admin: psycopg.Connection,
) -> None:
    owner = (await client.simulate_post("/api/auth/dev", json={"displayName": "Owner"})).json
    invite = await client.simulate_post(
        "/api/referrals/invites",
        json={"label": "Club"},
        headers={"Authorization": f"Bearer {owner['accessToken']}"},
    )
    ticket = await verified_ticket(client, issuer, inbox, services, app_settings, "f@example.com")
    body = {
        "registrationTicket": ticket,
        "phone": PHONE,
        **PROFILE,
        "referralCode": owner["user"]["referralCode"],
        "inviteId": invite.json["id"],
    }
    done = await client.simulate_post("/api/auth/google/complete", json=body)
    assert done.status_code == 201, done.text
    row = pg_admin.execute(
        "SELECT referrer_id::text, referred_id::text, invite_id::text, paid_at, bonus"
        " FROM referrals"
    ).fetchall()
    assert row == [(owner["user"]["id"], done.json["user"]["id"], invite.json["id"], None, 0)]
