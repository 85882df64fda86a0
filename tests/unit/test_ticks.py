from __future__ import annotations

import json
import uuid

from ftl.store.ticks import Tick, TickSource


def test_tick_json_round_trips_with_the_documented_short_names() -> None:
    tick = Tick(
        uuid.uuid4(), 42, 7, 31_155, 31_100, 110, TickSource.TRADE, 1_781_377_200_000, False, 50_000
    )
    assert Tick.from_json(tick.to_json()) == tick
    assert set(json.loads(tick.to_json())) == {"id", "i", "q", "p", "b", "n", "k", "s", "t", "d"}


def test_a_lua_encoded_tick_without_the_degraded_flag_reads_as_healthy() -> None:
    text = json.dumps(
        {"id": str(uuid.uuid4()), "i": 1, "q": 1, "p": 5000, "b": 5000, "n": 0, "s": 0, "t": 1}
    )
    assert Tick.from_json(text).degraded is False
    assert Tick.from_json(text).k_mod_micros is None  # written before ticks carried kMod
