"""Structured logs (ftl/core/logs.py): one JSON object per line, carrying the request id in play."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from ftl.core import logs


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("ftl.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_line_is_one_json_object_with_the_fields_ops_search_by() -> None:
    line = logs.JsonFormatter().format(record("user %s washed out", "u-1"))
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["level"] == "WARNING"
    assert fields["logger"] == "ftl.test"
    assert fields["message"] == "user u-1 washed out"
    assert fields["time"].endswith("+00:00")
    assert "request_id" not in fields


def test_the_request_id_in_play_is_on_the_line() -> None:
    token = logs.request_id.set("req-42")
    try:
        fields = json.loads(logs.JsonFormatter().format(record("hello")))
    finally:
        logs.request_id.reset(token)
    assert fields["request_id"] == "req-42"


def test_a_traceback_stays_on_the_same_line() -> None:
    line = logs.JsonFormatter().format(record("failed", exc=True))
    assert "\n" not in line
    assert "ValueError: bad\nthing" in json.loads(line)["exception"]


@pytest.mark.parametrize("value", ["abc", "A1._-z", "x" * 64])
def test_a_short_token_is_kept_as_the_request_id(value: str) -> None:
    assert logs.valid_request_id(value) == value


@pytest.mark.parametrize("value", [None, "", "x" * 65, "has space", "a\nb", "abc\n", 'quote"', "é"])
def test_anything_else_is_not_a_request_id(value: str | None) -> None:
    assert logs.valid_request_id(value) is None


def test_a_new_request_id_is_a_valid_one() -> None:
    made = {logs.new_request_id() for _ in range(100)}
    assert len(made) == 100
    assert all(logs.valid_request_id(m) == m for m in made)
