"""The pure parts of the WebSocket limits (SPEC §7): the command token bucket, the nesting check
that runs before any JSON is parsed, and the settings that feed them."""

from __future__ import annotations

import json

import pytest

from ftl.core.config import ConfigError, Settings
from ftl.core.errors import InvalidInput
from ftl.core.json_input import nests_deeper_than
from web.ws.config import WsConfig
from web.ws.frames import MAX_NESTING, MAX_SEQ, parse_command
from web.ws.limits import TokenBucket


def test_a_full_bucket_serves_its_burst_then_refuses_until_it_refills() -> None:
    bucket = TokenBucket.full(rate_per_s=16.0, burst=50.0, now=100.0)
    assert all(bucket.take(100.0) for _ in range(50))
    assert not bucket.take(100.0)
    assert bucket.wait_s() == 1 / 16
    assert bucket.take(100.0625), "one token back after 1/16 s"
    assert not bucket.take(100.0625)


def test_a_bucket_never_holds_more_than_its_burst() -> None:
    bucket = TokenBucket.full(rate_per_s=20.0, burst=50.0, now=0.0)
    bucket.take(0.0)
    assert bucket.take(3_600.0)
    assert bucket.tokens == 49.0


def test_a_debt_refuses_until_paid_and_is_at_most_one_burst_deep() -> None:
    bucket = TokenBucket.full(rate_per_s=8.0, burst=5.0, now=0.0)
    bucket.owe(19, 0.0)  # a replay of 2,000 ticks
    assert bucket.tokens == -5.0, "the debt stops at one burst"
    assert not bucket.take(0.625)  # back to 0 tokens
    assert bucket.take(0.75)


def test_settings_feed_the_ws_limits() -> None:
    env = {
        "ENV": "development",
        "WS_MAX_CONNECTIONS_PER_USER": "3",
        "WS_COMMANDS_PER_S": "7",
        "WS_COMMAND_BURST": "9",
        "WS_CONNECTION_LEASE_S": "30",
    }
    config = WsConfig.from_settings(Settings.from_env(env))
    assert (config.max_connections_per_user, config.commands_per_s) == (3, 7.0)
    assert (config.command_burst, config.connection_lease_s) == (9.0, 30.0)
    defaults = WsConfig.from_settings(Settings.from_env({"ENV": "development"}))
    assert (defaults.max_connections_per_user, defaults.commands_per_s) == (5, 20.0)
    assert (defaults.command_burst, defaults.connection_lease_s) == (50.0, 60.0)


@pytest.mark.parametrize(
    "name", ["WS_MAX_CONNECTIONS_PER_USER", "WS_COMMANDS_PER_S", "WS_COMMAND_BURST"]
)
def test_a_ws_limit_below_one_stops_the_process(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"ENV": "development", name: "0"})


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "deeper"),
    [
        (nested(MAX_NESTING), False),
        (nested(MAX_NESTING + 1), True),
        ("[" * 3_000, True),
        ('{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":1}}}}}}}}', False),
        ('{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":1}}}}}}}}}', True),
        ('["' + "[" * 100 + '"]', False),  # brackets inside a string
        ('["\\"' + "[" * 100 + '"]', False),  # after an escaped quote, still inside it
        ("[" + ",".join(["[]"] * 1_000) + "]", False),  # many, side by side
    ],
)
def test_nesting_is_judged_without_parsing(text: str, deeper: bool) -> None:
    assert nests_deeper_than(text, MAX_NESTING) is deeper
    if not deeper and text.startswith("["):
        json.loads(text)  # the check agrees with the parser


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("[" * 3_000, "too_deeply_nested"),
        ('{"action":"ping","x":NaN}', "invalid_json"),
        ('{"action":"ping","x":Infinity}', "invalid_json"),
        ('{"action":"subscribe","idx":1,"lastSequence":' + "9" * 30 + "}", "validation_error"),
        ('{"action":"subscribe","idx":' + "9" * 4_000 + "}", "validation_error"),
        ("x" * 4_097, "message_too_large"),
        (b"\x81\x82", "invalid_message"),
    ],
)
def test_hostile_commands_get_stable_codes(message: str | bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_command(message)
    assert refused.value.code == code


def test_the_largest_seq_is_accepted() -> None:
    command = parse_command(json.dumps({"action": "subscribe", "idx": 1, "lastSequence": MAX_SEQ}))
    assert command.last_sequence == MAX_SEQ
