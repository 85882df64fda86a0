"""Google ID-token verification (SPEC §4): RS256 against Google's JWKS, every claim checked, the
nonce single-use. The jose parts live in ftl/store/auth/tokens.py (decision 0002).

The JWKS is cached per process, refreshed every 6 hours in the background (and on use when older),
and fetched again when a token names an unknown `kid` — at most once a minute, so a flood of
made-up kids cannot make us hammer Google.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from redis.asyncio import Redis

from ftl.core.config import Settings
from ftl.core.errors import InvalidInput, Unauthorized, Unavailable
from ftl.store import keys
from ftl.store.auth.tokens import RsaKey, decode_rs256, rsa_public_key_from_jwk, unverified_kid

log = logging.getLogger(__name__)

GOOGLE_ISSUERS = ["accounts.google.com", "https://accounts.google.com"]
# NOTE: with no GOOGLE_CLIENT_ID outside production, the local issuer and the verifier agree on
# this audience (production refuses to start without the real one).
DEV_CLIENT_ID = "ftl-dev.apps.googleusercontent.com"
JWKS_REFRESH_S = 6 * 3600
UNKNOWN_KID_REFETCH_S = 60
JWKS_TIMEOUT_S = 5.0
NONCE_TTL_S = 300
NONCE_MIN_CHARS, NONCE_MAX_CHARS = 16, 256


def google_audience(settings: Settings) -> str:
    return settings.google_client_id or DEV_CLIENT_ID


@dataclass(frozen=True)
class GoogleIdentity:
    subject: str
    email: str
    given_name: str
    family_name: str


class GoogleKeys:
    """Google's signing keys by `kid`, as this process last fetched them."""

    def __init__(self, jwks_url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.jwks_url = jwks_url
        self.clock = clock
        self._keys: dict[str, RsaKey] = {}
        self._fetched_at: float | None = None
        self._lock: asyncio.Lock | None = None

    def _stale(self, min_age_s: float) -> bool:
        return self._fetched_at is None or self.clock() - self._fetched_at >= min_age_s

    async def refresh(self) -> None:
        """Fetch the JWKS; on failure keep the keys we have (or 503 when we have none)."""
        self._fetched_at = self.clock()
        try:
            async with httpx.AsyncClient(timeout=JWKS_TIMEOUT_S) as http:
                reply = await http.get(self.jwks_url)
                reply.raise_for_status()
                document = reply.json()
            entries = document["keys"] if isinstance(document, dict) else None
            if not isinstance(entries, list):
                raise ValueError("no keys list")
            fresh = {}
            for entry in entries:
                try:
                    if isinstance(entry, Mapping) and isinstance(entry.get("kid"), str):
                        fresh[entry["kid"]] = rsa_public_key_from_jwk(entry)
                except ValueError:
                    continue  # NOTE: a key we cannot use (not RSA) is skipped, not fatal
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.warning("Google JWKS fetch from %s failed: %s", self.jwks_url, exc)
            if not self._keys:
                raise Unavailable("unavailable", "Google sign-in is unavailable.") from None
            return
        self._keys = fresh

    async def key(self, kid: str) -> RsaKey:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._stale(JWKS_REFRESH_S) or (
                kid not in self._keys and self._stale(UNKNOWN_KID_REFETCH_S)
            ):
                await self.refresh()
        found = self._keys.get(kid)
        if found is None:
            raise Unauthorized("unauthorized", "The Google token is not valid.")
        return found

    async def refresh_forever(self) -> None:
        """The background refresh, every JWKS_REFRESH_S; runs until cancelled."""
        while True:
            await asyncio.sleep(JWKS_REFRESH_S)
            # NOTE: a failure is already logged; the next round or the next sign-in tries again.
            with contextlib.suppress(Unavailable):
                await self.refresh()


def nonce_of(raw: object) -> str:
    if not isinstance(raw, str) or not NONCE_MIN_CHARS <= len(raw) <= NONCE_MAX_CHARS:
        raise InvalidInput(
            "validation_error",
            f"nonce must be text of {NONCE_MIN_CHARS} to {NONCE_MAX_CHARS} characters.",
            {"field": "nonce"},
        )
    return raw


def _text_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    return value if isinstance(value, str) else ""


async def verify_id_token(
    google_keys: GoogleKeys, redis: Redis, token: str, nonce: str, *, audience: str
) -> GoogleIdentity:
    """The identity in a valid Google ID token; 401 `unauthorized` / `token_expired` otherwise.

    Checks: RS256 signature by a current Google key, `aud`, `iss`, `exp`, `email_verified`, and
    the `nonce` claim equal to the one the client sent, which is then spent for NONCE_TTL_S.
    """
    kid = unverified_kid(token)
    if kid is None:
        raise Unauthorized("unauthorized", "The Google token is not valid.")
    claims = decode_rs256(
        token, await google_keys.key(kid), audience=audience, issuer=GOOGLE_ISSUERS
    )
    subject, email = _text_claim(claims, "sub"), _text_claim(claims, "email")
    if not subject or not email:
        raise Unauthorized("unauthorized", "The Google token names no account.")
    # NOTE: Google sends a boolean; some older tokens carry the string "true".
    if claims.get("email_verified") not in (True, "true"):
        raise Unauthorized("unauthorized", "The Google email address is not verified.")
    if not hmac.compare_digest(_text_claim(claims, "nonce").encode(), nonce.encode()):
        raise Unauthorized("unauthorized", "The Google token was made for another sign-in.")
    digest = hashlib.sha256(nonce.encode()).hexdigest()
    # APPSEC: a captured token replayed with its nonce must fail: each nonce signs in once.
    if not await redis.set(keys.google_nonce(digest), "1", nx=True, ex=NONCE_TTL_S):
        raise Unauthorized("unauthorized", "This sign-in was already used.")
    return GoogleIdentity(
        subject=subject,
        email=email.lower(),
        given_name=_text_claim(claims, "given_name"),
        family_name=_text_claim(claims, "family_name"),
    )
