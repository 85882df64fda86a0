"""Calling the API as a signed-in user in the integration tests."""

from __future__ import annotations

from typing import Any

from falcon import testing


async def login(api: testing.ASGIConductor, name: str) -> tuple[str, dict[str, str]]:
    """A dev login: the user id and the Authorization header of his access token."""
    result = await api.simulate_post("/api/auth/dev", json={"displayName": name})
    assert result.status_code == 200, result.text
    body: dict[str, Any] = result.json
    return body["user"]["id"], {"Authorization": f"Bearer {body['accessToken']}"}
