"""Page cursors: opaque to clients, typed inside, decoded here and nowhere else.

A cursor is the sort key of the last row a page gave out, as URL-safe base64 (no padding) of
`|`-joined text. Decoding checks every part against its type (an aware time, a UUID, a fill
kind), so anything that is not a cursor we gave out is 400 `validation_error` on `cursor` before
it reaches a query (docs/decisions/0112).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar
from uuid import UUID

from ftl.core.errors import InvalidInput

FillKind = Literal["open", "close"]
FILL_KINDS: tuple[FillKind, ...] = ("open", "close")
SEPARATOR = "|"
# NOTE: the longest cursor we give out is about 110 characters; more is never one of ours.
MAX_CURSOR_CHARS = 200
CURSOR_PATTERN = f"^[A-Za-z0-9_-]{{1,{MAX_CURSOR_CHARS}}}$"

C = TypeVar("C")


def _refused() -> InvalidInput:
    return InvalidInput("validation_error", "cursor is not one we gave out.", {"field": "cursor"})


def _encode(*parts: str) -> str:
    return base64.urlsafe_b64encode(SEPARATOR.join(parts).encode()).decode().rstrip("=")


def _decode(raw: str | None, count: int, build: Callable[[list[str]], C]) -> C | None:
    """None for no cursor; the cursor `build` makes of its `count` parts; else 400."""
    if raw is None:
        return None
    if not 1 <= len(raw) <= MAX_CURSOR_CHARS:
        raise _refused()
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        parts = text.split(SEPARATOR)
        if len(parts) != count:
            raise ValueError(text)
        return build(parts)
    except (ValueError, OverflowError, binascii.Error):  # UnicodeDecodeError is a ValueError
        raise _refused() from None


def _moment(raw: str) -> datetime:
    moment = datetime.fromisoformat(raw)
    if moment.tzinfo is None:
        raise ValueError(raw)
    return moment.astimezone(UTC)  # NOTE: OverflowError for a time Postgres could not hold


def _fill_kind(raw: str) -> FillKind:
    for kind in FILL_KINDS:
        if raw == kind:
            return kind
    raise ValueError(raw)


@dataclass(frozen=True)
class PositionsCursor:
    """After this position in `GET /api/positions` (newest opened first)."""

    opened_at: datetime
    position_id: UUID

    def encode(self) -> str:
        return _encode(self.opened_at.isoformat(), str(self.position_id))

    @classmethod
    def decode(cls, raw: str | None) -> PositionsCursor | None:
        return _decode(raw, 2, lambda parts: cls(_moment(parts[0]), UUID(parts[1])))


@dataclass(frozen=True)
class FillsCursor:
    """After this fill in `GET /api/trades` (newest first; a position's close before its open)."""

    at: datetime
    position_id: UUID
    kind: FillKind

    def encode(self) -> str:
        return _encode(self.at.isoformat(), str(self.position_id), self.kind)

    @classmethod
    def decode(cls, raw: str | None) -> FillsCursor | None:
        return _decode(
            raw, 3, lambda parts: cls(_moment(parts[0]), UUID(parts[1]), _fill_kind(parts[2]))
        )
