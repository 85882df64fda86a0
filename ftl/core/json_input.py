"""JSON that comes from outside (HTTP bodies, WebSocket frames): parsed once, by one set of rules.

Accepted is I-JSON (RFC 7493) nested at most MAX_DEPTH levels: UTF-8 only, no lone surrogates
in any string or key (`"\\ud800"` parses in Python but cannot be encoded, stored or logged), no
NaN or Infinity, no number over 4,300 digits. Anything else is 400 before any rule of the game
sees it: `invalid_json`, or `validation_error` naming the field that holds a lone surrogate
(docs/decisions/0112).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ftl.core.errors import InvalidInput

# NOTE: our deepest body (admin settings: weights by position by statistic) is 3 levels.
MAX_DEPTH = 32


JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
BRACKETS = re.compile(r"[\[\]{}]")


def nests_deeper_than(text: str, limit: int) -> bool:
    """Whether JSON text opens more than `limit` arrays or objects inside each other, read
    without parsing it.

    APPSEC: json.loads recurses once per level and raises RecursionError near a thousand levels
    ("[" × 3000 fits in a 4 KiB WebSocket command), so depth is judged before parsing, at every
    edge. PERF: a command has a few
    brackets; the count alone clears it, the scan runs only for bracket-heavy text."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for bracket in BRACKETS.findall(JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _refused(message: str) -> InvalidInput:
    return InvalidInput("invalid_json", message)


def reject_constant(name: str) -> None:
    # APPSEC: NaN and Infinity are not JSON; accepting them would let them reach the money math.
    raise ValueError(f"{name} is not allowed")


def _is_scalar_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_scalar_text(value: Any) -> None:
    """Every string and key is Unicode scalar text; else 400 `validation_error` naming the field
    (dotted path from the top) that holds a lone surrogate. Iterative, so a wide or deep value
    cannot exhaust the stack. Depth is not judged here: `loads` judged it before parsing."""
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        item, field = pending.pop()
        if isinstance(item, dict | list):
            named = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in named:
                if isinstance(key, str) and not _is_scalar_text(key):
                    raise _not_scalar(field or "body")
                pending.append((child, f"{field}.{key}" if field else str(key)))
        elif isinstance(item, str) and not _is_scalar_text(item):
            raise _not_scalar(field or "body")


def _not_scalar(field: str) -> InvalidInput:
    # NOTE: the field name itself may hold the surrogate; it is answered escaped, never raw.
    safe = field.encode("utf-8", "backslashreplace").decode("utf-8")
    return InvalidInput(
        "validation_error",
        f"{safe} must be Unicode text (no lone surrogates).",
        {"field": safe},
    )


def whole_number(value: Any) -> int | None:
    """A JSON integer as JSON Schema counts them (`3` and `3.0` alike), else None.

    NOTE: true and false are Python ints, and are not numbers in JSON."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of `raw` under the rules above, or 400 `invalid_json`. An edge with
    smaller messages passes a smaller `max_depth` (SPEC §7: WebSocket commands, 8)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except ValueError:  # UnicodeDecodeError
        raise _refused("The body is not valid JSON.") from None
    if nests_deeper_than(text, max_depth):
        raise _refused(f"The JSON is nested deeper than {max_depth} levels.")
    try:
        value = json.loads(text, parse_constant=reject_constant)
    except ValueError:  # json.JSONDecodeError is a ValueError
        raise _refused("The body is not valid JSON.") from None
    # PERF: after a strict UTF-8 decode a `\u` escape is the only way a surrogate gets in, so an
    # ordinary body (a trade) pays one substring test and no walk.
    if "\\u" in text or not _is_scalar_text(text):
        _check_scalar_text(value)
    return value
