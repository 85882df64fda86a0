"""The real processes start, serve and refuse misconfiguration in one line (no traceback)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.e2e.conftest import WebProcess, environment, free_port, run_ftl, running_web

pytestmark = pytest.mark.e2e


def test_ftl_help_lists_the_commands() -> None:
    result = run_ftl("--help")
    assert result.returncode == 0
    for command in ("migrate", "seed", "keys", "web"):
        assert command in result.stdout


def test_web_under_gunicorn_is_ready(web: WebProcess) -> None:
    ready = httpx.get(f"{web.url}/ready", timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    missing = httpx.get(f"{web.url}/api/nothing-here", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_web_refuses_a_declared_body_over_16_kib(web: WebProcess) -> None:
    result = httpx.post(f"{web.url}/health", content=b"x" * (16 * 1024 + 1), timeout=5)
    assert result.status_code == 413
    assert result.json()["error"]["code"] == "payload_too_large"


def assert_one_line_failure(result: object, *needles: str) -> None:
    assert result.returncode != 0  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0]


# No ENV at all: what a deploy that forgot the variable runs as (SPEC §3, secure by default).
PRODUCTION: dict[str, str | None] = {
    "ENV": None,
    "GOOGLE_CLIENT_ID": "client.apps.googleusercontent.com",
    "SPORTMONKS_API_TOKEN": "token",
    "METRICS_TOKEN": "scrape-token",
    "DISABLE_RATE_LIMIT": "1",
}


@pytest.mark.parametrize(
    "command", [("web",), ("ws",), ("migrate",), ("seed",)], ids=lambda c: c[0]
)
def test_no_env_and_a_missing_secret_stops_at_start_naming_it(command: tuple[str, ...]) -> None:
    result = run_ftl(*command, env={**PRODUCTION, "METRICS_TOKEN": None, "GOOGLE_CLIENT_ID": ""})
    assert_one_line_failure(result, "production", "METRICS_TOKEN", "GOOGLE_CLIENT_ID")
    assert "JWT_PRIVATE_KEY_B64" not in result.stderr


@pytest.mark.parametrize("module", [("workers", "workers.margin"), ("workers.clock",)])
def test_no_env_and_a_missing_secret_stops_a_worker_naming_it(module: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *module],
        env=environment({**PRODUCTION, "SPORTMONKS_API_TOKEN": None}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_failure(result, "production", "SPORTMONKS_API_TOKEN")


def test_a_web_started_with_no_env_offers_no_development_surface(schema: str, clean: None) -> None:
    with running_web(PRODUCTION) as web:
        for path in ("/api/auth/dev", "/api/auth/dev/batch"):
            signed_in = httpx.post(f"{web.url}{path}", json={"displayName": "Mallory"}, timeout=5)
            assert signed_in.status_code == 404, signed_in.text
        assert httpx.get(f"{web.url}/console", timeout=5).status_code == 404
        document = httpx.get(f"{web.url}/api/openapi.json", timeout=5).json()
        assert not [path for path in document["paths"] if "/dev" in path or "console" in path]
        assert httpx.get(f"{web.url}/metrics", timeout=5).status_code == 401
        # DISABLE_RATE_LIMIT=1 is ignored: the referral check's 10 a minute hold.
        validate = f"{web.url}/api/public/referral/validate?code=abcdef12"
        statuses = [httpx.get(validate, timeout=5).status_code for _ in range(11)]
        assert statuses == [200] * 10 + [429]


def test_unreachable_database_is_one_line(schema: str) -> None:
    url = f"postgresql+psycopg://ftl@127.0.0.1:{free_port()}/ftl"
    assert_one_line_failure(
        run_ftl("migrate", env={"DATABASE_URL": url}), "migrate:", "OperationalError"
    )


def test_unreachable_redis_is_one_line(schema: str, clean: None) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert_one_line_failure(run_ftl("seed", env={"REDIS_URL": url}), "seed:")
