"""The real processes start, serve and refuse misconfiguration in one line (no traceback)."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import WebProcess, free_port, run_ftl

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


def test_production_without_secrets_stops_at_start() -> None:
    result = run_ftl(
        "web",
        env={
            "ENV": "production",
            "JWT_PRIVATE_KEY_B64": "",
            "GOOGLE_CLIENT_ID": "",
            "SPORTMONKS_API_TOKEN": "",
        },
    )
    assert_one_line_failure(result, "ENV=production needs", "JWT_PRIVATE_KEY_B64")


def test_unreachable_database_is_one_line(schema: str) -> None:
    url = f"postgresql+psycopg://ftl@127.0.0.1:{free_port()}/ftl"
    assert_one_line_failure(
        run_ftl("migrate", env={"DATABASE_URL": url}), "migrate:", "OperationalError"
    )


def test_unreachable_redis_is_one_line(schema: str, clean: None) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert_one_line_failure(run_ftl("seed", env={"REDIS_URL": url}), "seed:")
