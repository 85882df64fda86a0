"""Rate limits hold across two web processes at once: the counters live in Redis (SPEC §3)."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import running_web

pytestmark = pytest.mark.e2e

VALIDATE = "/api/public/referral/validate?code=abcdef12"
VALIDATE_LIMIT_PER_MIN = 10


def test_a_route_limit_is_shared_by_two_web_processes(schema: str, clean: None) -> None:
    limited = {"DISABLE_RATE_LIMIT": "0"}
    with running_web(limited) as first, running_web(limited) as second:
        assert first.url != second.url
        statuses = [
            httpx.get(f"{(first, second)[n % 2].url}{VALIDATE}", timeout=5).status_code
            for n in range(VALIDATE_LIMIT_PER_MIN)
        ]
        assert statuses == [200] * VALIDATE_LIMIT_PER_MIN
        for process in (first, second):
            refused = httpx.get(f"{process.url}{VALIDATE}", timeout=5)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(refused.headers["retry-after"]) <= 60
