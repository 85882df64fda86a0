"""`ftl bots` as a real process: it trades against `ftl web` and reports, refuses bad options, and
refuses to run at all in production."""

from __future__ import annotations

import httpx
import pytest
import redis

from ftl.store import keys, ratelimit
from ftl.store.auth.tokens import generate_private_key_b64
from tests.e2e.conftest import WebProcess, run_ftl, running_web

pytestmark = pytest.mark.e2e


PRODUCTION = {
    "ENV": "production",
    "JWT_PRIVATE_KEY_B64": generate_private_key_b64(),
    "GOOGLE_CLIENT_ID": "client.apps.googleusercontent.com",
    "SPORTMONKS_API_TOKEN": "token",
    "METRICS_TOKEN": "scrape-token",
}


def test_bots_are_off_in_production() -> None:
    refused = run_ftl("bots", "--url", "http://127.0.0.1:9", env=PRODUCTION)
    assert refused.returncode == 2
    assert (
        refused.stderr.strip() == "bots: synthetic traders are off in production (ENV=production)"
    )


def test_bots_pointed_at_production_cannot_sign_in(schema: str, clean: None) -> None:
    with running_web(PRODUCTION) as production:
        result = run_ftl("bots", "--url", production.url, "--turns", "1")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "the dev sign-in was refused (not_found)" in lines[0]


@pytest.mark.parametrize(
    "option", [["--count", "0"], ["--count", "1001"], ["--rate", "0"], ["--rate", "x"]]
)
def test_bad_options_exit_2(option: list[str]) -> None:
    result = run_ftl("bots", *option)
    assert result.returncode == 2
    assert "ftl bots: error: argument" in result.stderr


def test_bots_trade_against_the_web_process(web: WebProcess) -> None:
    result = run_ftl(
        "bots", "--count", "3", "--rate", "50", "--turns", "30", "--seed", "1", "--url", web.url
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bots: 3 synthetic traders (bot-0001...) signed in at")
    assert lines[-1].startswith("bots: opened ") and "failures 0" in lines[-1]
    listed = httpx.get(f"{web.url}/api/instruments", timeout=5).json()["instruments"]
    assert any(instrument["netLots"] != 0 for instrument in listed)


def test_bots_from_their_own_address_leave_the_users_rate_limit_alone(
    schema: str, clean: None, redis_admin: redis.Redis
) -> None:
    """`make run` starts the bots with --source-address 127.0.0.2: with rate limits on, every
    request of theirs counts against 127.0.0.2, none against a person's 127.0.0.1."""
    assert run_ftl("seed").returncode == 0
    with running_web({"DISABLE_RATE_LIMIT": "0"}) as web:
        result = run_ftl(
            "bots",
            *("--count", "2", "--rate", "50", "--turns", "20", "--seed", "2"),
            *("--url", web.url, "--source-address", "127.0.0.2"),
        )
        assert result.returncode == 0, result.stderr
        bots_counted = int(
            redis_admin.get(keys.rate_limit(ratelimit.OVERALL_SCOPE, "127.0.0.2")) or 0
        )
        assert bots_counted >= 20  # sign-in, market reads, 20 trades
        assert redis_admin.get(keys.rate_limit(ratelimit.OVERALL_SCOPE, "127.0.0.1")) is None
