"""Slow and oversized clients against a live `ftl web` (issue #8, decision 0077): a client that
trickles its request, never finishes its body, or sends nothing is dropped once the read
deadline passes, and meanwhile everybody else is served; an oversized head is 431 and an
unannounced (chunked) body over 16 KiB is 413."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from tests.e2e.conftest import WebProcess, run_ftl, running_web
from web.body import MAX_BODY_BYTES

pytestmark = pytest.mark.e2e

READ_TIMEOUT_S = 2
SOCKET_GUARD_S = 20  # a guard against hanging, never a measurement
TRICKLE_GAP_S = 0.25


@pytest.fixture
def web(schema: str, clean: None) -> Iterator[WebProcess]:
    seeded = run_ftl("seed")
    assert seeded.returncode == 0, seeded.stderr
    with running_web({"WEB_REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S)}) as process:
        yield process


def connect(web: WebProcess) -> socket.socket:
    parts = urlsplit(web.url)
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.settimeout(SOCKET_GUARD_S)
    return sock


def dropped(sock: socket.socket) -> bool:
    """The server closed the connection without answering."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def others_are_served(web: WebProcess) -> None:
    assert httpx.get(f"{web.url}/health", timeout=SOCKET_GUARD_S).status_code == 200
    assert httpx.get(f"{web.url}/api/districts", timeout=SOCKET_GUARD_S).status_code == 200


def test_a_client_that_never_finishes_its_head_is_dropped(web: WebProcess) -> None:
    with connect(web) as silent, connect(web) as partial:
        partial.sendall(b"GET /api/districts HTTP/1.1\r\nHost: ftl\r\n")
        others_are_served(web)
        assert dropped(partial)
        assert dropped(silent)
    others_are_served(web)


def test_a_trickling_client_is_dropped_while_it_still_sends(web: WebProcess) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: ftl\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    # NOTE: at one byte per gap the whole request would take far longer than the deadline.
    assert len(request) * TRICKLE_GAP_S > 10 * READ_TIMEOUT_S
    with connect(web) as slow:
        sent = 0
        try:
            for byte in request:
                slow.sendall(bytes((byte,)))
                sent += 1
                if sent % 4 == 0:
                    others_are_served(web)
                time.sleep(TRICKLE_GAP_S)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < len(request), "the whole slow request went through"
        assert dropped(slow)


def test_a_body_that_never_arrives_is_dropped_and_changes_nothing(
    web: WebProcess, pg_admin: psycopg.Connection
) -> None:
    users = pg_admin.execute("SELECT count(*) FROM users").fetchone()
    with connect(web) as slow:
        slow.sendall(
            b"POST /api/auth/dev HTTP/1.1\r\nHost: ftl\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"displayName": "Slo'
        )
        others_are_served(web)
        assert dropped(slow)
    assert pg_admin.execute("SELECT count(*) FROM users").fetchone() == users


def test_an_oversized_head_is_431(web: WebProcess) -> None:
    with connect(web) as big:
        big.sendall(b"GET /health HTTP/1.1\r\nHost: ftl\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        assert big.recv(1024).startswith(b"HTTP/1.1 431 ")
    others_are_served(web)


def test_a_chunked_body_over_16_kib_is_413(web: WebProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"displayName": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    # NOTE: a generator body has no Content-Length: httpx sends it chunked.
    result = httpx.post(
        f"{web.url}/api/auth/dev",
        content=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=SOCKET_GUARD_S,
    )
    assert result.status_code == 413, result.text
    assert result.json()["error"]["code"] == "payload_too_large"
