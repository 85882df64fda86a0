"""Page cursors: what we give out decodes to itself; anything else is 400 on `cursor`."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from ftl.core.cursors import MAX_CURSOR_CHARS, FillsCursor, PositionsCursor
from ftl.core.errors import InvalidInput

MOMENT = datetime(2026, 6, 11, 19, 0, 0, 123_000, tzinfo=UTC)
POSITION = uuid.UUID("3f1d2c4b-5a69-4788-9abc-def012345678")


def raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_cursors_we_give_out_decode_to_themselves() -> None:
    positions = PositionsCursor(MOMENT, POSITION)
    fills = FillsCursor(MOMENT, POSITION, "close")
    assert PositionsCursor.decode(positions.encode()) == positions
    assert FillsCursor.decode(fills.encode()) == fills
    assert PositionsCursor.decode(None) is None and FillsCursor.decode(None) is None
    assert len(fills.encode()) <= MAX_CURSOR_CHARS


POSITIONS_NOT_OURS = {
    "the id half is not a UUID (the reported 500)": "MjAyNC0wMS0wMVQwMDowMDowMCswMDowMHx4",
    "empty": "",
    "not base64": "!!!!",
    "not UTF-8": base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
    "a time with no zone": raw(f"2026-06-11T19:00:00|{POSITION}"),
    "a time Postgres cannot hold": raw(f"0001-01-01T00:00:00+05:00|{POSITION}"),
    "one part too many": raw(f"{MOMENT.isoformat()}|{POSITION}|open"),
    "over long": "A" * (MAX_CURSOR_CHARS + 1),
}
FILLS_NOT_OURS = {
    "the kind half where the id belongs (the reported 500)": raw(f"{MOMENT.isoformat()}|open"),
    "an id of 'open'": raw(f"{MOMENT.isoformat()}|open|open"),
    "an unknown kind": raw(f"{MOMENT.isoformat()}|{POSITION}|sideways"),
    "a positions cursor": PositionsCursor(MOMENT, POSITION).encode(),
}


@pytest.mark.parametrize("sent", list(POSITIONS_NOT_OURS.values()), ids=list(POSITIONS_NOT_OURS))
def test_a_positions_cursor_not_ours_is_a_validation_error(sent: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        PositionsCursor.decode(sent)
    assert (refused.value.code, refused.value.details) == ("validation_error", {"field": "cursor"})


@pytest.mark.parametrize("sent", list(FILLS_NOT_OURS.values()), ids=list(FILLS_NOT_OURS))
def test_a_fills_cursor_not_ours_is_a_validation_error(sent: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        FillsCursor.decode(sent)
    assert (refused.value.code, refused.value.details) == ("validation_error", {"field": "cursor"})
