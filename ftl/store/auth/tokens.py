"""FTL tokens (RS256 JWTs) — the only module in the product that imports python-jose.

APPSEC: python-jose up to 3.5.0 accepts a DER public key as an HMAC secret (CVE-2026-85394), so a
verifier that lets HS256 through can be forged with our public key. Every decode here pins
`algorithms=["RS256"]` and passes an RSA key object from the cryptography backend, never a string,
`None` or an HMAC algorithm. See docs/decisions/0002-python-jose-used-safely.md.

Claims: sub, typ, jti, iat, exp, iss, aud (+ whatever `extra` a caller adds, e.g. a refresh
token's family). `typ` is pinned on verification: a token of one type is never another.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import ExpiredSignatureError, JWTError, jwk, jwt
from jose.backends.cryptography_backend import CryptographyRSAKey

from ftl.core.config import ConfigError
from ftl.core.errors import Unauthorized

ALGORITHM = "RS256"
ALGORITHMS = [ALGORITHM]  # APPSEC: never None, never an HMAC algorithm
RSA_KEY_BITS = 2048
REQUIRED_CLAIMS = ("sub", "typ", "jti", "iat", "exp", "iss", "aud")
# PERF: access tokens a process remembers as verified (LRU; ~1.5 KiB each with their claims), so
# a user's requests pay the RS256 check and the claim checks once per token (decision 0018).
VERIFIED_ACCESS_TOKENS = 4096
# NOTE: other modules name key objects by this alias so that only this module imports jose.
RsaKey = CryptographyRSAKey


class TokenType(Enum):
    ACCESS = "access"
    REFRESH = "refresh"
    WS = "ws"
    REGISTRATION = "registration"  # the ticket between Google sign-in and a completed profile


TTL_S = {
    TokenType.ACCESS: 15 * 60,
    TokenType.REFRESH: 7 * 24 * 3600,
    TokenType.WS: 60,
    TokenType.REGISTRATION: 5 * 60,
}


@dataclass(frozen=True)
class Claims:
    sub: str
    typ: TokenType
    jti: str
    iat: int
    exp: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def user_id(self) -> uuid.UUID:
        return uuid.UUID(self.sub)


def generate_private_key_b64() -> str:
    """A fresh RSA key as base64 of its PEM (the form JWT_PRIVATE_KEY_B64 takes)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64encode(pem).decode("ascii")


def rsa_public_key(public_pem: bytes) -> CryptographyRSAKey:
    """An RS256 verification key object (cryptography backend) from a public PEM."""
    key = jwk.construct(public_pem.decode("ascii"), algorithm=ALGORITHM)
    if not isinstance(key, CryptographyRSAKey):  # pragma: no cover - backend is a dependency
        raise ConfigError("config: python-jose must use the cryptography backend")
    return key


def rsa_public_key_from_jwk(entry: Mapping[str, Any]) -> CryptographyRSAKey:
    """An RS256 verification key object from one JWKS entry; ValueError unless it is RSA."""
    if entry.get("kty") != "RSA" or entry.get("alg", ALGORITHM) != ALGORITHM:
        raise ValueError("not an RS256 key")
    try:
        key = jwk.construct(dict(entry), algorithm=ALGORITHM)
    except (JWTError, TypeError, KeyError) as exc:
        raise ValueError(f"bad JWK: {exc}") from None
    if not isinstance(key, CryptographyRSAKey):  # pragma: no cover - backend is a dependency
        raise ConfigError("config: python-jose must use the cryptography backend")
    return key


def public_jwk(public_pem: bytes, kid: str) -> dict[str, str]:
    """The JWKS entry publishing a public key (as Google's certs endpoint does)."""
    entry: dict[str, str] = rsa_public_key(public_pem).to_dict()
    return {**entry, "kid": kid, "use": "sig", "alg": ALGORITHM}


def key_id(public_pem: bytes) -> str:
    return hashlib.sha256(public_pem).hexdigest()[:16]


def rsa_signing_key(private_pem: str) -> CryptographyRSAKey:
    """An RS256 signing key object, built once per key.

    PERF: python-jose parses and checks a PEM on every encode (~40 ms for 2048 bits); a key object
    signs in ~0.3 ms, so a batch of 1,000 logins takes a fraction of a second, not 40 s.
    """
    key = jwk.construct(private_pem, algorithm=ALGORITHM)
    if not isinstance(key, CryptographyRSAKey):  # pragma: no cover - backend is a dependency
        raise ConfigError("config: python-jose must use the cryptography backend")
    return key


def sign_rs256(payload: Mapping[str, Any], key: CryptographyRSAKey, kid: str) -> str:
    """A compact RS256 JWS of the payload with `kid` in its header."""
    token: str = jwt.encode(dict(payload), key, algorithm=ALGORITHM, headers={"kid": kid})
    return token


def decode_rs256(
    token: str,
    key: CryptographyRSAKey,
    *,
    audience: str,
    issuer: str | list[str],
) -> dict[str, Any]:
    """Verify signature (RS256 only), exp, iat, aud and iss; raise Unauthorized otherwise."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=audience,
            issuer=issuer,
            options={
                "require_exp": True,
                "require_iat": True,
                "require_aud": True,
                "require_iss": True,
            },
        )
    except ExpiredSignatureError:
        raise Unauthorized("token_expired", "The token has expired.") from None
    except (JWTError, ValueError, TypeError):
        raise Unauthorized("unauthorized", "The token is not valid.") from None
    return claims


def unverified_kid(token: str) -> str | None:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except (JWTError, ValueError, TypeError):
        raise Unauthorized("unauthorized", "The token is not valid.") from None
    return kid if isinstance(kid, str) else None


class Tokens:
    """Issues and verifies FTL tokens with one RSA key pair."""

    def __init__(
        self,
        private_key_b64: str,
        *,
        issuer: str,
        audience: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not private_key_b64:
            raise ConfigError("config: JWT_PRIVATE_KEY_B64 is not set (generate one: ftl keys)")
        try:
            private_pem = base64.b64decode(private_key_b64, validate=True)
            private = serialization.load_pem_private_key(private_pem, password=None)
        except ValueError:
            raise ConfigError(
                "config: JWT_PRIVATE_KEY_B64 is not a base64 PEM private key"
            ) from None
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ConfigError("config: JWT_PRIVATE_KEY_B64 must be an RSA key")
        self.public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._signing_key = rsa_signing_key(private_pem.decode("ascii"))
        self._verifying_key = rsa_public_key(self.public_pem)
        self.kid = key_id(self.public_pem)
        self.issuer = issuer
        self.audience = audience
        self.clock = clock
        self._verified_access: OrderedDict[str, Claims] = OrderedDict()

    def issue(
        self,
        typ: TokenType,
        subject: str,
        *,
        extra: Mapping[str, Any] | None = None,
        ttl_s: int | None = None,
    ) -> tuple[str, Claims]:
        now = int(self.clock())
        claims = Claims(
            sub=subject,
            typ=typ,
            jti=uuid.uuid4().hex,
            iat=now,
            exp=now + (TTL_S[typ] if ttl_s is None else ttl_s),
            extra=dict(extra or {}),
        )
        payload = {
            **claims.extra,
            "sub": claims.sub,
            "typ": typ.value,
            "jti": claims.jti,
            "iat": claims.iat,
            "exp": claims.exp,
            "iss": self.issuer,
            "aud": self.audience,
        }
        return sign_rs256(payload, self._signing_key, self.kid), claims

    def verify(self, token: str, expected: TokenType) -> Claims:
        """The claims of a valid token of the expected type; Unauthorized otherwise.

        An access token verified before is answered from memory, but only until its `exp`, as
        python-jose would (a token is expired once the clock is past `exp`). APPSEC: only a token
        identical to one that passed every check is a hit, and revocation (a blocked jti, an
        ended session) is never cached: callers check it in Redis on every request.
        """
        if expected is not TokenType.ACCESS:
            return self._verify(token, expected)
        cached = self._verified_access.get(token)
        if cached is None:
            cached = self._verify(token, expected)
            self._verified_access[token] = cached
            if len(self._verified_access) > VERIFIED_ACCESS_TOKENS:
                self._verified_access.popitem(last=False)
        elif cached.exp < int(time.time()):
            self._verified_access.pop(token, None)
            raise Unauthorized("token_expired", "The token has expired.")
        else:
            self._verified_access.move_to_end(token)
        return cached

    def _verify(self, token: str, expected: TokenType) -> Claims:
        if unverified_kid(token) != self.kid:
            raise Unauthorized("unauthorized", "The token is not valid.")
        payload = decode_rs256(
            token, self._verifying_key, audience=self.audience, issuer=self.issuer
        )
        if payload.get("typ") != expected.value:
            # APPSEC: a refresh or ws token must never open the API, nor an access token the socket.
            raise Unauthorized("unauthorized", "The token is not valid here.")
        if any(name not in payload for name in REQUIRED_CLAIMS):
            raise Unauthorized("unauthorized", "The token is not valid.")
        return Claims(
            sub=str(payload["sub"]),
            typ=expected,
            jti=str(payload["jti"]),
            iat=int(payload["iat"]),
            exp=int(payload["exp"]),
            extra={k: v for k, v in payload.items() if k not in REQUIRED_CLAIMS},
        )
