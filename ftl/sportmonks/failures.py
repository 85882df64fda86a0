"""Why a Sportmonks call failed. Every kind counts toward the circuit breaker (SPEC §5.2)."""

from __future__ import annotations

from enum import Enum

from ftl.core.errors import Unavailable


class FailureKind(Enum):
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"  # 5xx, or the connection failed
    MALFORMED = "malformed"  # not JSON, or JSON that violates the schema we rely on


class SportmonksFailure(Unavailable):
    """The feed could not give us usable data; prices stay at their last good base."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__("sportmonks_unavailable", message, {"kind": kind.value})
        self.failure = kind


class MalformedPayload(SportmonksFailure):
    """The body is not the Sportmonks v3 shape; `path` says where (e.g. `data[0].lineups[3]`)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(FailureKind.MALFORMED, f"{path}: {problem}")
        self.path = path
