"""WebSocket frames (SPEC §7): the msgpack price maps and arrays, and client command parsing."""

from __future__ import annotations

import json
import struct
import uuid

import msgpack
import pytest
from websockets.frames import Frame, Opcode

from ftl.core.errors import InvalidInput
from ftl.store.ticks import Tick, TickSource
from web.ws.frames import (
    BINARY,
    TEXT,
    Action,
    Command,
    pack_tick,
    parse_command,
    price_frame,
    wire_frame,
)

INSTRUMENT = uuid.uuid4()


def a_tick(seq: int, price_cents: int, *, degraded: bool = False, idx: int = 42) -> Tick:
    return Tick(INSTRUMENT, idx, seq, price_cents, 0, 0, TickSource.LIVE, 0, degraded)


def test_a_tick_packs_to_the_four_key_map_with_a_float64_price() -> None:
    expected = b"\x84\xa1i\x2a\xa1p\xcb" + struct.pack(">d", 312.55) + b"\xa1s\x00\xa1q\xcd\x01\x2c"
    assert pack_tick(a_tick(300, 31_255)) == expected


def test_the_degraded_flag_is_present_only_while_degraded() -> None:
    assert msgpack.unpackb(pack_tick(a_tick(1, 100, degraded=True))) == {
        "i": 42,
        "p": 1.0,
        "s": 0,
        "q": 1,
        "d": 1,
    }
    assert "d" not in msgpack.unpackb(pack_tick(a_tick(1, 100)))


def test_a_large_idx_and_seq_stay_unsigned_integers() -> None:
    decoded = msgpack.unpackb(pack_tick(a_tick(2**40, 99_999_999, idx=65_535)))
    assert decoded == {"i": 65_535, "p": 999_999.99, "s": 0, "q": 2**40}


@pytest.mark.parametrize("count", [2, 15, 16, 65_535, 65_536])
def test_several_ticks_make_the_same_bytes_as_packing_the_array(count: int) -> None:
    ticks = [a_tick(seq, 5_000 + seq) for seq in range(1, count + 1)]
    frame = price_frame([pack_tick(one) for one in ticks])
    maps = [msgpack.unpackb(pack_tick(one)) for one in ticks]
    assert frame == msgpack.packb(maps)


def test_one_tick_is_a_bare_map_not_an_array() -> None:
    packed = pack_tick(a_tick(1, 100))
    assert price_frame([packed]) == packed


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536])
@pytest.mark.parametrize("opcode", [Opcode.BINARY, Opcode.TEXT])
def test_a_prebuilt_frame_is_what_websockets_would_write(size: int, opcode: Opcode) -> None:
    payload = bytes(n % 251 for n in range(size))
    expected = Frame(opcode, payload).serialize(mask=False, extensions=[])
    assert wire_frame(payload, BINARY if opcode is Opcode.BINARY else TEXT) == expected


@pytest.mark.parametrize(
    ("message", "command"),
    [
        ('{"action":"ping"}', Command(Action.PING)),
        ('{"action":"subscribe_portfolio"}', Command(Action.SUBSCRIBE_PORTFOLIO)),
        ('{"action":"subscribe","idx":42}', Command(Action.SUBSCRIBE, idx=42)),
        (
            '{"action":"subscribe","idx":1,"lastSequence":0}',
            Command(Action.SUBSCRIBE, idx=1, last_sequence=0),
        ),
        (
            json.dumps({"action": "unsubscribe", "instrumentId": str(INSTRUMENT)}),
            Command(Action.UNSUBSCRIBE, instrument_id=INSTRUMENT),
        ),
    ],
)
def test_commands_parse(message: str, command: Command) -> None:
    assert parse_command(message) == command


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b'{"action":"ping"}', "invalid_message"),
        ("", "invalid_json"),
        ('"ping"', "invalid_json"),
        ("{}", "unknown_action"),
        ('{"action":["ping"]}', "unknown_action"),
        ('{"action":"ping","userId":"x"}', "unknown_field"),
        ('{"action":"subscribe_portfolio","userId":"x"}', "unknown_field"),
        ('{"action":"unsubscribe","idx":1,"lastSequence":3}', "unknown_field"),
        ('{"action":"subscribe"}', "validation_error"),
        ('{"action":"subscribe","idx":65536}', "validation_error"),
        ('{"action":"subscribe","idx":"42"}', "validation_error"),
        ('{"action":"subscribe","idx":4.0}', "validation_error"),
        ('{"action":"subscribe","instrumentId":42}', "validation_error"),
        ('{"action":"subscribe","idx":1,"lastSequence":false}', "validation_error"),
        ('{"action":"subscribe","idx":1,"lastSequence":"7"}', "validation_error"),
    ],
)
def test_bad_commands_are_refused_with_a_stable_code(message: str | bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_command(message)
    assert refused.value.code == code
