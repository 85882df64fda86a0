"""Helpers to run the real processes (the `ftl` command, gunicorn) on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis

from ftl.core.config import Settings
from ftl.store import hotstore
from ftl.store.auth.tokens import Tokens

FTL = str(Path(sys.executable).with_name("ftl"))
START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def environment(changes: Mapping[str, str | None] | None) -> dict[str, str]:
    """The test environment (ENV=development, tests/conftest.py) with `changes`; None unsets."""
    merged = {**os.environ, **(changes or {})}
    return {name: value for name, value in merged.items() if value is not None}


def run_ftl(
    *args: str, env: Mapping[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FTL, *args], env=environment(env), capture_output=True, text=True, timeout=60
    )


@dataclass
class WebProcess:
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def running_web(env: Mapping[str, str | None] | None = None) -> Iterator[WebProcess]:
    """`ftl web` (gunicorn + one uvicorn worker) on a free port, ready to serve."""
    port = free_port()
    full_env = environment({"WEB_PORT": str(port), "WEB_CONCURRENCY": "1", **(env or {})})
    process = subprocess.Popen(
        [FTL, "web"], env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ftl web did not start: {process.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.1)
        yield WebProcess(url, process)
    finally:
        process.terminate()
        process.wait(timeout=15)
        process.stderr.close()  # type: ignore[union-attr]


@pytest.fixture
def web(schema: str, clean: None) -> Iterator[WebProcess]:
    """`ftl web` (gunicorn + one uvicorn worker) on a free port, ready to serve (seeded: /ready
    needs hot state present)."""
    seeded = run_ftl("seed")
    assert seeded.returncode == 0, seeded.stderr
    with running_web() as process:
        yield process


@pytest.fixture
def tokens(settings: Settings) -> Tokens:
    """The token keys of the test environment, which `ftl ws` processes started by tests share."""
    return Tokens(
        settings.jwt_private_key_b64, issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )


@pytest.fixture
async def hot(settings: Settings, redis_admin: redis.Redis) -> AsyncIterator[Redis]:
    """A client of the test Redis, emptied first."""
    redis_admin.flushdb()
    client = hotstore.connect(settings)
    yield client
    await client.aclose()
