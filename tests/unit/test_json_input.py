"""JSON from outside: I-JSON nested at most MAX_DEPTH levels, or a 400 that says why."""

from __future__ import annotations

import pytest

from ftl.core import json_input
from ftl.core.errors import InvalidInput


def refusal(raw: bytes, max_depth: int = json_input.MAX_DEPTH) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        json_input.loads(raw, max_depth)
    return refused.value


def nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[]" + b"}" * (depth - 1)


def test_nesting_up_to_the_limit_parses_and_one_level_more_is_refused() -> None:
    assert json_input.loads(nested(json_input.MAX_DEPTH)) is not None
    assert refusal(nested(json_input.MAX_DEPTH + 1)).code == "invalid_json"
    assert json_input.loads(nested(8), max_depth=8) is not None
    assert refusal(nested(9), max_depth=8).code == "invalid_json"
    # Far past the parser's own recursion limit: still one clean refusal.
    assert refusal(b"[" * 3000 + b"]" * 3000).code == "invalid_json"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"nonce": "\\ud800"}', "nonce"),
        (b'{"weights": {"GK": ["ok", "\\udfff"]}}', "weights.GK.1"),
        (b'{"\\ud800": 1}', "body"),
        (b'"\\udc00"', "body"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_its_field(raw: bytes, field: str) -> None:
    refused = refusal(raw)
    assert (refused.code, refused.details) == ("validation_error", {"field": field})


def test_a_surrogate_pair_is_one_character_and_welcome() -> None:
    assert json_input.loads(b'{"label": "\\ud83d\\ude00"}') == {"label": "\U0001f600"}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"label": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes
        b'{"label": "\xc0\xaf"}',  # an overlong encoding
        b"\xef\xbb\xbf{}",  # a byte order mark
        b"NaN",
        b'{"a": -Infinity}',
        b"1" * 5000,
        b"{",
    ],
)
def test_what_is_not_i_json_is_invalid_json(raw: bytes) -> None:
    assert refusal(raw).code == "invalid_json"
