"""Lua scripts run by EVALSHA and survive Redis forgetting them."""

from __future__ import annotations

import time
import uuid

from ftl.store import keys
from ftl.store.scripts import read_scripts
from ftl.store.services import Services


async def test_ping_runs_by_sha(services: Services) -> None:
    answer, server_ms = await services.scripts.call("ping")
    assert answer == "PONG"
    assert abs(server_ms - time.time() * 1000) < 5_000
    assert await services.scripts.missing() == []


async def test_script_flush_is_survived_by_reloading_on_noscript(services: Services) -> None:
    await services.redis.script_flush()
    assert await services.scripts.missing() == sorted(read_scripts())
    answer, _ = await services.scripts.call("ping")
    assert answer == "PONG"
    assert "ping" not in await services.scripts.missing()


async def test_function_flush_is_survived_by_loading_the_trade_library_again(
    services: Services,
) -> None:
    await services.redis.function_flush()
    assert set(services.scripts.library.functions) <= set(await services.scripts.missing())
    user, position = str(uuid.uuid4()), str(uuid.uuid4())
    reply = await services.scripts.call(
        "position_close",
        keys=[
            keys.wallet(user),
            keys.idempotency(user, "r1"),
            keys.revoked_jti("j1"),
            keys.position(position),
            keys.revoked_jti("j1"),
        ],
        args=[user, position, "r1", "fingerprint", "0"],
    )
    assert reply[:2] == [0, "not_found"]
    assert await services.scripts.missing() == []
