"""FTL tokens: RS256 only, typed, and every known forgery rejected (SPEC §4, decision 0002)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from ftl.core.config import ConfigError
from ftl.core.errors import Unauthorized
from ftl.store.auth.tokens import TTL_S, Claims, Tokens, TokenType, generate_private_key_b64

USER = "0b5f0a4e-8c55-4c2a-9a53-0e8f0f3c2d11"
KEY_B64 = generate_private_key_b64()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand, as an attacker would (python-jose refuses to sign some of these)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    if secret is None:
        return f"{signing_input}."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return Tokens(KEY_B64, issuer="ftl", audience="ftl-api")


def valid_payload(typ: str = "access") -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": USER,
        "typ": typ,
        "jti": "j1",
        "iat": now,
        "exp": now + 600,
        "iss": "ftl",
        "aud": "ftl-api",
    }


def rejected(tokens: Tokens, token: str, expected: TokenType = TokenType.ACCESS) -> str:
    with pytest.raises(Unauthorized) as caught:
        tokens.verify(token, expected)
    return caught.value.code


@pytest.mark.parametrize("typ", list(TokenType))
def test_a_token_verifies_as_its_own_type(tokens: Tokens, typ: TokenType) -> None:
    token, issued = tokens.issue(typ, USER)
    claims = tokens.verify(token, typ)
    assert claims == Claims(sub=USER, typ=typ, jti=issued.jti, iat=issued.iat, exp=issued.exp)
    assert claims.exp - claims.iat == TTL_S[typ]


def test_lifetimes_are_15_minutes_7_days_60_seconds_and_5_minutes() -> None:
    assert TTL_S == {
        TokenType.ACCESS: 900,
        TokenType.REFRESH: 604_800,
        TokenType.WS: 60,
        TokenType.REGISTRATION: 300,
    }


@pytest.mark.parametrize(
    ("issued", "used_as"),
    [
        (TokenType.REFRESH, TokenType.ACCESS),
        (TokenType.WS, TokenType.ACCESS),
        (TokenType.ACCESS, TokenType.WS),
        (TokenType.ACCESS, TokenType.REFRESH),
    ],
)
def test_a_token_is_never_accepted_as_another_type(
    tokens: Tokens, issued: TokenType, used_as: TokenType
) -> None:
    token, _ = tokens.issue(issued, USER)
    assert rejected(tokens, token, used_as) == "unauthorized"


def test_hs256_signed_with_the_pem_public_key_is_rejected(tokens: Tokens) -> None:
    token = forge(
        {"alg": "HS256", "typ": "JWT", "kid": tokens.kid}, valid_payload(), tokens.public_pem
    )
    assert rejected(tokens, token) == "unauthorized"


def test_hs256_signed_with_the_der_public_key_is_rejected(tokens: Tokens) -> None:
    public = serialization.load_pem_public_key(tokens.public_pem)
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = forge({"alg": "HS256", "typ": "JWT", "kid": tokens.kid}, valid_payload(), der)
    assert rejected(tokens, token) == "unauthorized"


def test_alg_none_is_rejected(tokens: Tokens) -> None:
    token = forge({"alg": "none", "typ": "JWT", "kid": tokens.kid}, valid_payload(), None)
    assert rejected(tokens, token) == "unauthorized"


def test_wrong_issuer_or_audience_is_rejected(tokens: Tokens) -> None:
    other_iss = Tokens(KEY_B64, issuer="someone-else", audience="ftl-api")
    other_aud = Tokens(KEY_B64, issuer="ftl", audience="another-api")
    assert rejected(tokens, other_iss.issue(TokenType.ACCESS, USER)[0]) == "unauthorized"
    assert rejected(tokens, other_aud.issue(TokenType.ACCESS, USER)[0]) == "unauthorized"


def test_an_expired_token_says_so(tokens: Tokens) -> None:
    past = Tokens(KEY_B64, issuer="ftl", audience="ftl-api", clock=lambda: time.time() - 3600)
    token, _ = past.issue(TokenType.ACCESS, USER)
    assert rejected(tokens, token) == "token_expired"


def test_a_tampered_payload_is_rejected(tokens: Tokens) -> None:
    token, _ = tokens.issue(TokenType.ACCESS, USER)
    header, _, signature = token.split(".")
    payload = valid_payload()
    payload["sub"] = "ffffffff-ffff-ffff-ffff-ffffffffffff"
    tampered = f"{header}.{b64url(json.dumps(payload).encode())}.{signature}"
    assert rejected(tokens, tampered) == "unauthorized"


def test_an_unknown_kid_is_rejected(tokens: Tokens) -> None:
    stranger = Tokens(generate_private_key_b64(), issuer="ftl", audience="ftl-api")
    assert rejected(tokens, stranger.issue(TokenType.ACCESS, USER)[0]) == "unauthorized"


def test_a_token_signed_by_another_key_with_our_kid_is_rejected(tokens: Tokens) -> None:
    stranger = Tokens(generate_private_key_b64(), issuer="ftl", audience="ftl-api")
    stranger.kid = tokens.kid
    assert rejected(tokens, stranger.issue(TokenType.ACCESS, USER)[0]) == "unauthorized"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "a.b", "...", "eyJhbGciOiJSUzI1NiJ9.e30."])
def test_garbage_is_rejected(tokens: Tokens, garbage: str) -> None:
    assert rejected(tokens, garbage) == "unauthorized"


def test_a_missing_or_broken_key_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="JWT_PRIVATE_KEY_B64 is not set"):
        Tokens("", issuer="ftl", audience="ftl-api")
    with pytest.raises(ConfigError, match="not a base64 PEM"):
        Tokens("bm90IGEga2V5", issuer="ftl", audience="ftl-api")


def test_a_remembered_access_token_still_expires_at_its_exp() -> None:
    tokens = Tokens(KEY_B64, issuer="ftl", audience="ftl-api")
    token, issued = tokens.issue(TokenType.ACCESS, USER, ttl_s=1)
    assert tokens.verify(token, TokenType.ACCESS) == issued  # remembered from here on
    assert tokens.verify(token, TokenType.ACCESS) == issued
    while int(time.time()) <= issued.exp:
        time.sleep(0.05)
    assert rejected(tokens, token) == "token_expired"
    assert rejected(tokens, token) == "token_expired"


def test_a_remembered_access_token_is_no_other_type_and_vouches_for_no_look_alike() -> None:
    tokens = Tokens(KEY_B64, issuer="ftl", audience="ftl-api")
    token, _ = tokens.issue(TokenType.ACCESS, USER)
    tokens.verify(token, TokenType.ACCESS)
    header, payload, signature = token.split(".")
    assert rejected(tokens, token, TokenType.REFRESH) == "unauthorized"
    assert rejected(tokens, token, TokenType.WS) == "unauthorized"
    flipped = "B" if signature[10] == "A" else "A"
    tampered = f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}"
    assert rejected(tokens, tampered) == "unauthorized"
    forged = forge({"alg": "none", "typ": "JWT", "kid": tokens.kid}, valid_payload(), None)
    assert rejected(tokens, forged) == "unauthorized"
