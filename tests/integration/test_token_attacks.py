"""Every known forgery of an FTL access token is refused with 401 over HTTP (SPEC §4)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from falcon import testing

from ftl.core.config import Settings
from ftl.store.auth.tokens import Tokens, TokenType, generate_private_key_b64
from ftl.store.services import Services
from tests.integration.test_web import assert_envelope
from tests.unit.test_tokens import b64url, forge
from web.app import create_app

USER = "0b5f0a4e-8c55-4c2a-9a53-0e8f0f3c2d11"


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[testing.ASGIConductor]:
    async with testing.ASGIConductor(create_app(settings)) as conductor:
        yield conductor


def payload(settings: Settings) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": USER,
        "typ": "access",
        "jti": "j1",
        "iat": now,
        "exp": now + 600,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }


def der(tokens: Tokens) -> bytes:
    public = serialization.load_pem_public_key(tokens.public_pem)
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def tampered(services: Services) -> str:
    token, _ = services.tokens.issue(TokenType.ACCESS, USER)
    header, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "ffffffff-ffff-ffff-ffff-ffffffffffff"
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


def other(settings: Settings, **changes: Any) -> Tokens:
    return Tokens(
        changes.get("key", settings.jwt_private_key_b64),
        issuer=changes.get("issuer", settings.jwt_issuer),
        audience=changes.get("audience", settings.jwt_audience),
        clock=changes.get("clock", time.time),
    )


ATTACKS: dict[str, Callable[[Settings, Services], str]] = {
    "hs256_with_pem_public_key": lambda s, v: forge(
        {"alg": "HS256", "kid": v.tokens.kid}, payload(s), v.tokens.public_pem
    ),
    "hs256_with_der_public_key": lambda s, v: forge(
        {"alg": "HS256", "kid": v.tokens.kid}, payload(s), der(v.tokens)
    ),
    "alg_none": lambda s, v: forge({"alg": "none", "kid": v.tokens.kid}, payload(s), None),
    "refresh_as_access": lambda s, v: v.tokens.issue(TokenType.REFRESH, USER)[0],
    "ws_as_access": lambda s, v: v.tokens.issue(TokenType.WS, USER)[0],
    "wrong_iss": lambda s, v: other(s, issuer="evil").issue(TokenType.ACCESS, USER)[0],
    "wrong_aud": lambda s, v: other(s, audience="evil").issue(TokenType.ACCESS, USER)[0],
    "expired": lambda s, v: other(s, clock=lambda: time.time() - 3600).issue(
        TokenType.ACCESS, USER
    )[0],
    "tampered": lambda s, v: tampered(v),
    "unknown_kid": lambda s, v: other(s, key=generate_private_key_b64()).issue(
        TokenType.ACCESS, USER
    )[0],
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_a_forged_access_token_is_401(
    client: testing.ASGIConductor, settings: Settings, services: Services, attack: str
) -> None:
    token = ATTACKS[attack](settings, services)
    code = "token_expired" if attack == "expired" else "unauthorized"
    for headers, cookies in (
        ({"Authorization": f"Bearer {token}"}, None),
        ({}, {"ftl_access": token}),
    ):
        result = await client.simulate_get("/api/me", headers=headers, cookies=cookies)
        assert_envelope(result, 401, code)
        result = await client.simulate_post("/api/ws/token", headers=headers, cookies=cookies)
        assert_envelope(result, 401, code)
