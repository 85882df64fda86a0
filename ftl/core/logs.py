"""Structured logs: one JSON object per line, from every process (web, ws, workers, clock, CLI).

Each line carries `time` (ISO-8601 UTC), `level`, `logger`, `message`, and `request_id` while one
is in play: the web middleware sets it per request, and the Dramatiq middleware restores it in
the worker that processes a message the request enqueued (docs/decisions/0061).

APPSEC: log messages never carry tokens, codes or keys; tests/integration/test_log_secrets.py
greps a whole sign-in and trading flow for them.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# APPSEC: a client-chosen id is echoed into logs and headers, so it is held to a short token.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
REQUEST_ID_BYTES = 12  # 16 URL-safe characters

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def valid_request_id(value: str | None) -> str | None:
    """The id when it is a short token, else None (the caller then makes one)."""
    return value if value is not None and REQUEST_ID_PATTERN.fullmatch(value) else None


def new_request_id() -> str:
    return secrets.token_urlsafe(REQUEST_ID_BYTES)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (exceptions included, newlines escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        current = request_id.get()
        if current is not None:
            line["request_id"] = current
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def dict_config(level: str) -> dict[str, Any]:
    """The logging configuration of every process: JSON on stderr, one handler at the root.

    `gunicorn.error` gets the same handler and does not propagate, so no line is written twice
    (uvicorn workers copy its handlers). PERF: `gunicorn.access` gets none: uvicorn writes an
    access line per request whenever it has one (web/telemetry.py logs them at DEBUG instead).
    """
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "root": {"level": level, "handlers": ["json"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["json"], "propagate": False},
            "gunicorn.access": {"handlers": [], "propagate": False},
        },
    }


def setup(level: str) -> None:
    """Replace the root logger's handlers with the JSON one (call once, at process start)."""
    logging.config.dictConfig(dict_config(level))


def setup_unless_configured(level: str) -> None:
    """`setup` for an entry point that may run inside a host which already configured logging
    (a test runner calling `ftl.cli.main`): the host's handlers stay."""
    if not logging.getLogger().handlers:
        setup(level)
