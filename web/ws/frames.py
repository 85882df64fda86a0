"""WebSocket frames both ways (SPEC §7), as pure functions: no I/O here.

Server → client prices are binary MessagePack: one tick is the map
`{"i": idx, "p": price in points (float64), "s": source, "q": seq}` plus `"d": 1` only while the
instrument is degraded; several ticks due to one connection in one fan-out cycle travel as one
array of those maps, oldest first. Portfolio frames are the JSON text of the `portfolio:{userId}`
channel, forwarded verbatim. Client → server commands are text JSON objects with an `action`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeGuard
from uuid import UUID

import msgpack

from ftl.core import json_input
from ftl.core.errors import FtlError, InvalidInput
from ftl.store.ticks import Tick

MAX_IDX = 0xFFFF  # idx is a uint16
MAX_SEQ = (1 << 63) - 1  # a seq is a Redis integer; a longer number is no seq at all
MAX_COMMAND_BYTES = 4_096  # SPEC §7: a longer message is refused with an error frame
MAX_NESTING = 8  # SPEC §7: arrays and objects deeper than this are refused unparsed


def pack_tick(tick: Tick) -> bytes:
    """One tick as its MessagePack map, packed once per fan-out cycle and shared by every
    subscriber's frame."""
    # NOTE: the protocol carries the price as a float64 of points; cents / 100 is the nearest
    # double to the exact price, and nothing downstream computes money with it.
    body: dict[str, int | float] = {
        "i": tick.idx,
        "p": tick.price_cents / 100,
        "s": int(tick.source),
        "q": tick.seq,
    }
    if tick.degraded:
        body["d"] = 1
    packed: bytes = msgpack.packb(body)
    return packed


def price_frame(packed_ticks: Sequence[bytes]) -> bytes:
    """The frame for ticks packed by `pack_tick`, oldest first: the map itself for one tick,
    otherwise a MessagePack array of them."""
    count = len(packed_ticks)
    if count == 1:
        return packed_ticks[0]
    # PERF: the array is its header plus the already packed maps; nothing is packed again.
    if count < 16:
        header = bytes((0x90 | count,))
    elif count < 1 << 16:
        header = b"\xdc" + count.to_bytes(2, "big")
    else:
        header = b"\xdd" + count.to_bytes(4, "big")
    return header + b"".join(packed_ticks)


TEXT, BINARY = 0x1, 0x2  # WebSocket opcodes (RFC 6455 §5.2)


def wire_frame(payload: bytes, opcode: int = BINARY) -> bytes:
    """`payload` as one whole, unmasked WebSocket frame: the bytes a server writes to the socket.

    PERF: a price frame is framed once per fan-out cycle and the same bytes are written to every
    connection due it. Valid because the server negotiates no extension (SPEC §7: no
    compression), so every connection frames a message the same way."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return header + payload


def _text(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


PONG = _text({"type": "pong"})


def error_frame(error: FtlError) -> str:
    body: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message}
    if error.details:
        body["details"] = error.details
    return _text(body)


def subscribed_frame(idx: int, instrument_id: str) -> str:
    return _text({"type": "subscribed", "idx": idx, "instrumentId": instrument_id})


def unsubscribed_frame(idx: int, instrument_id: str) -> str:
    return _text({"type": "unsubscribed", "idx": idx, "instrumentId": instrument_id})


PORTFOLIO_SUBSCRIBED = _text({"type": "subscribed", "portfolio": True})


class Action(Enum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    SUBSCRIBE_PORTFOLIO = "subscribe_portfolio"
    PING = "ping"


FIELDS = {
    Action.SUBSCRIBE: {"action", "idx", "instrumentId", "lastSequence"},
    Action.UNSUBSCRIBE: {"action", "idx", "instrumentId"},
    # APPSEC: no userId field: the portfolio is always the token's user's.
    Action.SUBSCRIBE_PORTFOLIO: {"action"},
    Action.PING: {"action"},
}


@dataclass(frozen=True)
class Command:
    """One client command; an instrument command names it by exactly one of idx, instrument_id."""

    action: Action
    idx: int | None = None
    instrument_id: UUID | None = None
    last_sequence: int | None = None


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput("validation_error", message, {"field": field})


def parse_command(message: str | bytes) -> Command:
    """The command in one client message; InvalidInput with a stable code otherwise."""
    if not isinstance(message, str):
        raise InvalidInput("invalid_message", "Commands are text frames of JSON.")
    # NOTE: a char is 1–4 bytes in UTF-8; encode only when the char count leaves doubt.
    if len(message) > MAX_COMMAND_BYTES or (
        not message.isascii() and len(message.encode()) > MAX_COMMAND_BYTES
    ):
        raise InvalidInput(
            "message_too_large",
            f"A command is at most {MAX_COMMAND_BYTES} bytes.",
            {"maxBytes": MAX_COMMAND_BYTES},
        )
    if json_input.nests_deeper_than(message, MAX_NESTING):
        raise InvalidInput(
            "too_deeply_nested",
            f"A command nests at most {MAX_NESTING} levels.",
            {"maxDepth": MAX_NESTING},
        )
    try:
        data = json.loads(message, parse_constant=json_input.reject_constant)
    except ValueError:
        raise InvalidInput("invalid_json", "The message is not JSON.") from None
    if not isinstance(data, dict):
        raise InvalidInput("invalid_json", "A command is a JSON object.")
    name = data.get("action")
    action = next((a for a in Action if a.value == name), None)
    if action is None:
        raise InvalidInput(
            "unknown_action",
            "Unknown action.",
            {"allowed": [a.value for a in Action]},
        )
    unknown = sorted(set(data) - FIELDS[action])
    if unknown:
        raise InvalidInput("unknown_field", "Unknown field.", {"fields": unknown})
    if action not in (Action.SUBSCRIBE, Action.UNSUBSCRIBE):
        return Command(action)
    if ("idx" in data) == ("instrumentId" in data):
        raise _invalid("idx", "Name the instrument by exactly one of idx or instrumentId.")
    idx = data.get("idx")
    instrument_id = None
    if "idx" in data and not (_whole(idx) and 1 <= idx <= MAX_IDX):
        raise _invalid("idx", f"idx is a whole number from 1 to {MAX_IDX}.")
    if "instrumentId" in data:
        raw = data["instrumentId"]
        try:
            instrument_id = UUID(raw) if isinstance(raw, str) else None
        except ValueError:
            instrument_id = None
        if instrument_id is None:
            raise _invalid("instrumentId", "instrumentId is a UUID.")
    last_sequence = data.get("lastSequence")
    if last_sequence is not None and not (_whole(last_sequence) and 0 <= last_sequence <= MAX_SEQ):
        raise _invalid("lastSequence", f"lastSequence is a whole number from 0 to {MAX_SEQ}.")
    return Command(action, idx, instrument_id, last_sequence)
