"""Google's JWKS cache (SPEC §4): fetched once, again on an unknown `kid` at most once a minute,
and every 6 hours."""

from __future__ import annotations

import pytest

from ftl.core.errors import Unauthorized, Unavailable
from ftl.ops.dev_google import DevGoogleIssuer
from ftl.store.auth.google import JWKS_REFRESH_S, UNKNOWN_KID_REFETCH_S, GoogleKeys, verify_id_token
from ftl.store.services import Services
from tests.e2e.conftest import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_flood_of_unknown_kids_fetches_at_most_once_a_minute(
    issuer: DevGoogleIssuer,
) -> None:
    clock = Clock()
    google_keys = GoogleKeys(issuer.jwks_url, clock=clock)
    assert await google_keys.key(issuer.kid) is not None
    assert issuer.jwks_requests == 1
    for attempt in range(50):
        with pytest.raises(Unauthorized):
            await google_keys.key(f"made-up-{attempt}")
    assert issuer.jwks_requests == 1  # fetched less than a minute ago: no fetch
    clock.now += UNKNOWN_KID_REFETCH_S
    for attempt in range(50):
        with pytest.raises(Unauthorized):
            await google_keys.key(f"made-up-again-{attempt}")
    assert issuer.jwks_requests == 2  # the first unknown kid of the new minute fetched, once
    await google_keys.key(issuer.kid)
    assert issuer.jwks_requests == 2  # a known kid costs nothing


async def test_keys_are_refetched_after_6_hours(issuer: DevGoogleIssuer) -> None:
    clock = Clock()
    google_keys = GoogleKeys(issuer.jwks_url, clock=clock)
    await google_keys.key(issuer.kid)
    clock.now += JWKS_REFRESH_S - 1
    await google_keys.key(issuer.kid)
    assert issuer.jwks_requests == 1
    clock.now += 1
    await google_keys.key(issuer.kid)
    assert issuer.jwks_requests == 2


async def test_a_rotated_google_key_is_picked_up_through_its_new_kid(
    issuer: DevGoogleIssuer, services: Services
) -> None:
    clock = Clock()
    google_keys = GoogleKeys(issuer.jwks_url, clock=clock)
    await google_keys.key(issuer.kid)
    rotated = DevGoogleIssuer()
    try:
        issuer.jwks["keys"].append(rotated.jwks["keys"][0])  # Google publishes the new key
        clock.now += UNKNOWN_KID_REFETCH_S
        token = rotated.mint("r@example.com", nonce="n" * 16, aud=issuer.client_id)
        identity = await verify_id_token(
            google_keys, services.redis, token, "n" * 16, audience=issuer.client_id
        )
        assert identity.email == "r@example.com"
    finally:
        rotated.server.server_close()


async def test_an_unreachable_jwks_is_503_not_a_crash() -> None:
    google_keys = GoogleKeys(f"http://127.0.0.1:{free_port()}/certs")
    with pytest.raises(Unavailable):
        await google_keys.key("any")


async def test_a_jwks_outage_keeps_the_keys_we_have(issuer: DevGoogleIssuer) -> None:
    clock = Clock()
    google_keys = GoogleKeys(issuer.jwks_url, clock=clock)
    await google_keys.key(issuer.kid)
    google_keys.jwks_url = f"http://127.0.0.1:{free_port()}/certs"
    clock.now += JWKS_REFRESH_S
    assert await google_keys.key(issuer.kid) is not None
