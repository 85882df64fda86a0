"""lua/lib/engine.lua derives Redis key names from ids; they must be the names of
ftl/store/keys.py."""

from __future__ import annotations

import re

from ftl.store import keys
from ftl.store.scripts import LUA_DIR

ENGINE = (LUA_DIR / "lib" / "engine.lua").read_text(encoding="utf-8")


def lua_prefix(function: str) -> str:
    match = re.search(rf"function E\.{function}\(id\) return '([^']+)' \.\. id end", ENGINE)
    assert match, f"engine.lua has no E.{function}"
    return match.group(1)


def lua_constant(name: str) -> str:
    match = re.search(rf"^E\.{name} = '([^']+)'$", ENGINE, re.MULTILINE)
    assert match, f"engine.lua has no E.{name}"
    return match.group(1)


def test_the_engine_names_keys_as_ftl_keys_does() -> None:
    assert lua_prefix("k_instrument") + "x" == keys.instrument("x")
    assert lua_prefix("k_wallet") + "x" == keys.wallet("x")
    assert lua_prefix("k_position") + "x" == keys.position("x")
    assert lua_prefix("k_open") + "x" == keys.open_positions("x")
    assert lua_prefix("k_exposure") + "x" == keys.exposure("x")
    assert lua_prefix("k_below") + "x" == keys.stops_below("x")
    assert lua_prefix("k_above") + "x" == keys.stops_above("x")
    assert lua_prefix("k_ticklog") + "x" == keys.tick_log("x")
    assert lua_prefix("k_holders") + "x" == keys.holders("x")
    assert lua_prefix("k_held") + "x" == keys.held("x")
    assert lua_prefix("k_district") + "7" == keys.board_district(7)
    assert lua_constant("OUTBOX") == keys.OUTBOX
    assert lua_constant("BOARD") == keys.BOARD_OVERALL
    assert lua_constant("ARRIVALS") == keys.BOARD_ARRIVALS
    assert lua_constant("PRICES") == keys.PRICES
    assert "'price:' .. iid" in ENGINE and keys.price_channel("iid") == "price:iid"
    assert "'portfolio:' .. uid" in ENGINE and keys.portfolio_channel("uid") == "portfolio:uid"


def test_the_engine_caps_the_tick_log_and_the_replay_window_as_ftl_keys_does() -> None:
    assert f"E.TICK_LOG_CAP = {keys.TICK_LOG_CAP}" in ENGINE
    assert f"E.IDEM_TTL = {keys.IDEMPOTENCY_TTL_S}" in ENGINE
