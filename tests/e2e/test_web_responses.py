"""Responses of a live `ftl web` on one keep-alive connection (decision 0024, the head held until
the body's first write): complete, in order, for GET, HEAD, pipelined requests and
`Expect: 100-continue`."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import WebProcess, run_ftl, running_web

pytestmark = pytest.mark.e2e

SOCKET_GUARD_S = 10  # a guard against hanging, never a measurement


@pytest.fixture(scope="module")
def web(schema: str) -> Iterator[WebProcess]:
    seeded = run_ftl("seed")
    assert seeded.returncode == 0, seeded.stderr
    with running_web() as process:
        yield process


@pytest.fixture
def connection(web: WebProcess) -> Iterator[socket.socket]:
    parts = urlsplit(web.url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.settimeout(SOCKET_GUARD_S)
        yield sock


class Responses:
    """Reads whole responses (head, then Content-Length bytes) off one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection"
        self.buffer += chunk

    def next(self, *, body: bool = True) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
        length = int(headers.get("content-length", "0")) if body else 0
        while len(self.buffer) < length:
            self._fill()
        payload, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, payload


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: ftl\r\n\r\n".encode()


def test_sequential_requests_on_one_connection_get_whole_responses(
    connection: socket.socket,
) -> None:
    responses = Responses(connection)
    for path in ("/health", "/api/districts", "/api/no-such-route", "/health"):
        connection.sendall(get(path))
        status, headers, payload = responses.next()
        assert status == (404 if "no-such" in path else 200)
        assert len(payload) == int(headers["content-length"]) > 0


def test_pipelined_requests_are_answered_in_order(connection: socket.socket) -> None:
    connection.sendall(get("/health") + get("/api/districts") + get("/health"))
    responses = Responses(connection)

    answers = [responses.next() for _ in range(3)]

    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert answers[0][2] == answers[2][2] != answers[1][2]


def test_a_head_request_is_answered_and_the_connection_goes_on(connection: socket.socket) -> None:
    responses = Responses(connection)
    connection.sendall(b"HEAD /health HTTP/1.1\r\nHost: ftl\r\n\r\n")
    status, _, payload = responses.next(body=False)
    assert status in (200, 405) and payload == b""

    connection.sendall(get("/health"))
    assert responses.next()[0] == 200


def test_expect_100_continue_gets_its_interim_answer_before_the_body(
    connection: socket.socket,
) -> None:
    body = b'{"email": "someone@example.com"}'
    connection.sendall(
        b"POST /api/auth/verify-otp HTTP/1.1\r\nHost: ftl\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    responses = Responses(connection)

    interim, _, _ = responses.next(body=False)
    assert interim == 100
    connection.sendall(body)
    status, headers, payload = responses.next()
    assert status < 500 and len(payload) == int(headers["content-length"])
