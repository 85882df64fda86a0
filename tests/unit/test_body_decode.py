"""A body decoded into its Struct (web/body.py, web/schemas.py): every refusal is ours, with the
code and the field the error contract names (docs/api.md)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from ftl.core import json_input
from ftl.core.errors import InvalidInput
from web.body import decode
from web.schemas import FlagBody, LevelsBody, OpenPositionBody

ORDER = {
    "instrumentId": "3f0b2c1e-8d4a-4b7e-9c55-0a1b2c3d4e5f",
    "direction": "long",
    "lotSize": 0.29,
    "clientRequestId": "c-1",
    "clientPrice": 123.45,
}


class Outer(msgspec.Struct, forbid_unknown_fields=True):
    inner: list[FlagBody]


def refused(raw: bytes | str, schema: Any = OpenPositionBody) -> tuple[str, dict[str, Any]]:
    """The refusal of decoding `raw`, and of turning an order into the engine's units."""
    with pytest.raises(InvalidInput) as refusal:
        body = decode(raw.encode() if isinstance(raw, str) else raw, schema)
        if isinstance(body, OpenPositionBody):
            body.order()
    return refusal.value.code, refusal.value.details


def test_an_order_decodes_to_the_integers_the_engine_takes() -> None:
    order = decode(json.dumps(ORDER).encode(), OpenPositionBody).order()
    # NOTE: 0.29 is not a multiple of 0.01 in floats; it is in the Decimal the client wrote.
    assert (order.lots_centis, order.client_price_cents) == (29, 12345)
    assert order.stop_loss_cents is None


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"leverage": 10}, "unknown_field", "leverage"),
        ({"lotSize": "1"}, "validation_error", "lotSize"),
        ({"lotSize": True}, "validation_error", "lotSize"),
        ({"lotSize": 100.01}, "validation_error", "lotSize"),
        ({"lotSize": 1.005}, "validation_error", "lotSize"),
        ({"clientPrice": None}, "validation_error", "clientPrice"),
        ({"clientRequestId": "x" * 65}, "validation_error", "clientRequestId"),
        ({"direction": "up"}, "validation_error", "direction"),
        ({"instrumentId": "not-a-uuid"}, "validation_error", "instrumentId"),
    ],
)
def test_a_bad_field_is_named(change: dict[str, Any], code: str, field: str) -> None:
    assert refused(json.dumps({**ORDER, **change})) == (code, {"field": field})


def test_a_missing_field_is_named() -> None:
    body = {k: v for k, v in ORDER.items() if k != "clientPrice"}
    assert refused(json.dumps(body)) == ("validation_error", {"field": "clientPrice"})


def test_a_nested_field_is_named_by_its_dotted_path() -> None:
    raw = '{"inner": [{"enabled": true}, {"enabled": 1}]}'
    assert refused(raw, Outer) == ("validation_error", {"field": "inner.1.enabled"})
    raw = '{"inner": [{"enabled": true, "colour": 1}]}'
    assert refused(raw, Outer) == ("unknown_field", {"field": "inner.0.colour"})


@pytest.mark.parametrize(
    "raw",
    ['{"leverage": 1, "lotSize": Infinity}', '{"lotSize": NaN}', "[]", '"text"', "{", ""],
)
def test_what_is_not_a_json_object_is_invalid_json_before_any_field(raw: str) -> None:
    assert refused(raw)[0] == "invalid_json"


def test_nesting_deeper_than_the_limit_is_invalid_json() -> None:
    deep = "[" * (json_input.MAX_DEPTH + 1) + "]" * (json_input.MAX_DEPTH + 1)
    assert refused(f'{{"stopLoss": {deep}}}', LevelsBody)[0] == "invalid_json"


def test_a_lone_surrogate_is_refused_naming_its_field() -> None:
    assert refused('{"stopLoss": "\\ud800"}', LevelsBody) == (
        "validation_error",
        {"field": "stopLoss"},
    )


def test_absent_null_and_a_number_are_three_different_levels() -> None:
    levels = decode(b'{"stopLoss": null, "takeProfit": 120.5}', LevelsBody).levels()
    assert (levels.stop_loss, levels.take_profit) == (None, 12050)
    assert decode(b"{}", LevelsBody).levels().stop_loss == "keep"
