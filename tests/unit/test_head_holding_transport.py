"""web.worker.HeadHoldingTransport: a response's head and body leave in one write (decision
0024), and nothing is ever held past the cycle's end."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from web.worker import HeadHoldingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recorder:
    """Stands in for the socket's transport: what was written, in which calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed


def holding(recorder: Recorder, completed: list[bool] | None = None) -> HeadHoldingTransport:
    done = completed if completed is not None else []
    return HeadHoldingTransport(cast(asyncio.Transport, recorder), lambda: done.append(True))


def test_the_head_and_the_body_leave_in_one_write() -> None:
    recorder = Recorder()
    transport = holding(recorder)

    transport.write(HEAD)
    assert recorder.writes == []
    transport.write(b"{}")

    assert recorder.writes == [HEAD + b"{}"]


def test_only_the_head_is_held_and_later_chunks_pass_at_once() -> None:
    recorder = Recorder()
    transport = holding(recorder)

    for chunk in (HEAD, b"a", b"b", b"c"):
        transport.write(chunk)

    assert recorder.writes == [HEAD + b"a", b"b", b"c"]


def test_a_response_without_a_body_write_sends_its_head_when_complete() -> None:
    recorder, completed = Recorder(), list[bool]()
    transport = holding(recorder, completed)

    transport.write(HEAD)
    transport.complete()

    assert recorder.writes == [HEAD] and completed == [True]
    transport.write(b"late")  # nothing is held after the end
    assert recorder.writes == [HEAD, b"late"]


def test_100_continue_is_never_held() -> None:
    recorder = Recorder()
    transport = holding(recorder)

    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert recorder.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    transport.write(HEAD)
    transport.write(b"{}")

    assert recorder.writes[1:] == [HEAD + b"{}"]


def test_close_sends_the_held_head_first_and_abort_drops_it() -> None:
    closing, aborting = Recorder(), Recorder()
    closed, aborted = holding(closing), holding(aborting)

    closed.write(HEAD)
    closed.close()
    aborted.write(HEAD)
    aborted.abort()

    assert closing.writes == [HEAD] and closing.closed
    assert aborting.writes == [] and aborting.aborted


def test_everything_else_reaches_the_real_transport() -> None:
    recorder = Recorder()
    transport: Any = holding(recorder)

    assert transport.is_closing() is False
