"""APPSEC: no secret reaches a log line. A whole sign-up, sign-in, refresh, WebSocket token,
trade and logout flow runs with every logger at DEBUG (the product's and the libraries'), and the
captured lines are searched for every token, code and key the flow handled."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage

import psycopg
import pytest
from falcon import testing

from ftl.accounts.email import NoopSender, deliver
from ftl.core.config import Settings
from ftl.ops.dev_google import DevGoogleIssuer
from ftl.store.services import Services
from tests.integration.trading_helpers import make_instrument
from web.app import create_app

# NOTE: the test's own SMTP-less mail and HTTP servers are harness, not product.
HARNESS_LOGGERS = ("mail.log",)


class RecordingSender(NoopSender):
    """The development sender (it logs), keeping each message so the test can read the code."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> None:
        self.messages.append(message)
        await super().send(message)


@pytest.fixture
def app_settings(settings: Settings, issuer: DevGoogleIssuer) -> Settings:
    return dataclasses.replace(settings, google_jwks_url=issuer.jwks_url, smtp_url="")


@pytest.fixture
async def client(
    app_settings: Settings, services: Services, districts: None
) -> AsyncIterator[testing.ASGIConductor]:
    async with testing.ASGIConductor(create_app(app_settings)) as conductor:
        yield conductor


async def deliver_pending(services: Services, settings: Settings, sender: RecordingSender) -> None:
    async with services.engine.connect() as conn:
        rows = await conn.exec_driver_sql("SELECT id FROM email_outbox WHERE status = 'pending'")
        pending = [row[0] for row in rows]
    for outbox_id in pending:
        await deliver(services.engine, settings, outbox_id, sender)


def key_material(settings: Settings) -> list[str]:
    """The signing key as configured (base64) and each line of its PEM body."""
    pem = base64.b64decode(settings.jwt_private_key_b64).decode()
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return [settings.jwt_private_key_b64, *body]


async def test_a_full_flow_logs_no_token_code_or_key(
    client: testing.ASGIConductor,
    issuer: DevGoogleIssuer,
    services: Services,
    app_settings: Settings,
    pg_admin: psycopg.Connection,
    json_log: io.StringIO,
) -> None:
    secrets: list[str] = []
    sender = RecordingSender()
    address = "quiet@example.com"

    nonce = uuid.uuid4().hex
    id_token = issuer.mint(address, nonce=nonce)
    secrets.append(id_token)
    started = await client.simulate_post(
        "/api/auth/google", json={"idToken": id_token, "nonce": nonce}
    )
    assert started.status_code == 422, started.text
    ticket = started.json["registrationTicket"]
    await deliver_pending(services, app_settings, sender)
    found = re.search(r"\b(\d{6})\b", str(sender.messages[-1].get_body(("plain",))))
    assert found is not None
    code = found.group(1)
    secrets += [ticket]
    wrong = await client.simulate_post(
        "/api/auth/verify-otp",
        json={"registrationTicket": ticket, "otp": "000000" if code != "000000" else "111111"},
    )
    assert wrong.status_code == 401
    verified = await client.simulate_post(
        "/api/auth/verify-otp", json={"registrationTicket": ticket, "otp": code}
    )
    assert verified.status_code == 200, verified.text
    done = await client.simulate_post(
        "/api/auth/google/complete",
        json={
            "registrationTicket": ticket,
            "firstName": "Quiet",
            "age": 30,
            "phone": "9123456780",
            "districtId": 3,
        },
    )
    assert done.status_code == 201, done.text
    await deliver_pending(services, app_settings, sender)

    nonce = uuid.uuid4().hex
    login_token = issuer.mint(address, nonce=nonce)
    login = await client.simulate_post(
        "/api/auth/google", json={"idToken": login_token, "nonce": nonce}
    )
    assert login.status_code == 200, login.text
    refreshed = await client.simulate_post(
        "/api/auth/refresh", json={"refreshToken": login.json["refreshToken"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    bearer = {"Authorization": f"Bearer {refreshed.json['accessToken']}"}
    ws = await client.simulate_post("/api/ws/token", headers=bearer)
    assert ws.status_code == 200, ws.text

    instrument = await make_instrument(services, pg_admin)
    order = {
        "instrumentId": str(instrument),
        "direction": "long",
        "lotSize": 1,
        "clientRequestId": "quiet-1",
        "clientPrice": 100,
    }
    opened = await client.simulate_post("/api/positions/open", json=order, headers=bearer)
    assert opened.status_code == 201, opened.text
    closed = await client.simulate_delete(
        f"/api/positions/{opened.json['position']['id']}",
        params={"clientRequestId": "quiet-2"},
        headers=bearer,
    )
    assert closed.status_code == 200, closed.text
    out = await client.simulate_post(
        "/api/auth/logout", headers=bearer, json={"refreshToken": refreshed.json["refreshToken"]}
    )
    assert out.status_code == 204

    for login_body in (done.json, login.json, refreshed.json):
        secrets += [login_body["accessToken"], login_body["refreshToken"]]
    secrets += [login_token, ws.json["token"], *key_material(app_settings)]
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    product = "\n".join(
        json.dumps(line) for line in lines if not line["logger"].startswith(HARNESS_LOGGERS)
    )
    # NOTE: the search can only fail if the flow logged: every request left an access line.
    assert sum(line["logger"] == "web.access" for line in lines) >= 10
    assert sum("email not sent" in line["message"] for line in lines) == 2
    leaked = [secret[:12] + "..." for secret in secrets if secret in product]
    assert leaked == []
    assert not re.search(rf"(?<![0-9A-Za-z]){code}(?![0-9A-Za-z])", product)
    # A token's signature alone would be enough to recognise (and some logs truncate).
    assert not [s for s in secrets if s.count(".") == 2 and s.rsplit(".", 1)[1] in product]
