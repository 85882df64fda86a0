"""`ftl dev google`: the local issuer runs as its own process, serves a JWKS and mints ID tokens
(HTTP and CLI) that the product's real verification path accepts (SPEC §4)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from ftl.core.errors import Unauthorized
from ftl.store.auth.google import DEV_CLIENT_ID, GoogleKeys, verify_id_token
from ftl.store.services import Services
from tests.e2e.conftest import FTL, START_TIMEOUT_S, free_port, run_ftl

pytestmark = pytest.mark.e2e


@pytest.fixture
def dev_google() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [FTL, "dev", "google", "--port", str(port)],
        env={**os.environ, "GOOGLE_CLIENT_ID": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            try:
                if httpx.get(f"{url}/certs", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ftl dev google did not start: {process.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]


async def test_the_issuer_process_mints_tokens_the_verifier_accepts(
    dev_google: str, services: Services
) -> None:
    http = httpx.AsyncClient(timeout=5)
    discovery = (await http.get(f"{dev_google}/.well-known/openid-configuration")).json()
    assert discovery["jwks_uri"] == f"{dev_google}/certs"
    google_keys = GoogleKeys(discovery["jwks_uri"])
    port = dev_google.rsplit(":", 1)[1]
    minted = run_ftl(
        "dev", "google", "--port", port, "--mint", "dev@example.com", "--nonce", "n" * 16
    )
    assert minted.returncode == 0, minted.stderr
    identity = await verify_id_token(
        google_keys, services.redis, minted.stdout.strip(), "n" * 16, audience=DEV_CLIENT_ID
    )
    assert identity.email == "dev@example.com"
    over_http = (
        await http.post(
            f"{dev_google}/mint",
            json={"email": "dev@example.com", "nonce": "m" * 16, "emailVerified": False},
        )
    ).json()["idToken"]
    with pytest.raises(Unauthorized):
        await verify_id_token(
            google_keys, services.redis, over_http, "m" * 16, audience=DEV_CLIENT_ID
        )
    refused = await http.post(f"{dev_google}/mint", json={"nonce": "x"})
    assert refused.status_code == 400
    await http.aclose()


def test_ftl_dev_google_has_help() -> None:
    result = run_ftl("dev", "--help")
    assert result.returncode == 0 and "--mint" in result.stdout
