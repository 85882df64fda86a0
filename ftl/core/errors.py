"""Typed errors of the game. Each carries a stable snake_case code; the web edge maps the kind to
an HTTP status in one place (web/errors.py)."""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorKind(Enum):
    INVALID = "invalid"  # malformed or invalid input
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # a rule of the game refuses the request
    UNPROCESSABLE = "unprocessable"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"


class FtlError(Exception):
    """A refusal with a stable code, a human message and optional details."""

    kind: ErrorKind = ErrorKind.INVALID
    retry_after_s: int | None = None  # when set, answered with Retry-After

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


class InvalidInput(FtlError):
    kind = ErrorKind.INVALID


def invalid(field: str, message: str) -> InvalidInput:
    """400 `validation_error` naming the field: "<field> <message>."."""
    return InvalidInput("validation_error", f"{field} {message}.", {"field": field})


class Unauthorized(FtlError):
    kind = ErrorKind.UNAUTHORIZED


class Forbidden(FtlError):
    kind = ErrorKind.FORBIDDEN


class NotFound(FtlError):
    kind = ErrorKind.NOT_FOUND


class Conflict(FtlError):
    kind = ErrorKind.CONFLICT


class Unprocessable(FtlError):
    kind = ErrorKind.UNPROCESSABLE


class RateLimited(FtlError):
    kind = ErrorKind.RATE_LIMITED

    def __init__(self, retry_after_s: int, message: str = "Too many requests.") -> None:
        super().__init__("rate_limited", message, {"retryAfter": retry_after_s})
        self.retry_after_s = retry_after_s


class Unavailable(FtlError):
    kind = ErrorKind.UNAVAILABLE


class NotReplicated(Unavailable):
    """The trade was written on the Redis primary but no replica confirmed it within
    REDIS_WAIT_TIMEOUT_MS (decision 0151): it may survive or be lost with the primary. The same
    request again (same clientRequestId) answers its outcome: replayed if it is there, done now
    if it was lost."""

    retry_after_s = 1

    def __init__(self) -> None:
        super().__init__(
            "not_replicated",
            "The trade is not yet confirmed; repeat the request with the same clientRequestId.",
        )
