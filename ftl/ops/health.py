"""Readiness: can this process serve trades? Postgres, Redis, Lua scripts, eviction policy, and
hot state present (after a Redis loss, not until `ftl recover` ran)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ftl.store import hotstore, keys
from ftl.store.services import Services

CHECK_TIMEOUT_S = 2.0
OK: Final = "ok"


async def _postgres(services: Services) -> str:
    async with services.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return OK


async def _redis(services: Services) -> str:
    await services.redis.ping()
    return OK


async def _scripts(services: Services) -> str:
    missing = await services.scripts.missing()
    if missing:
        # NOTE: after a Redis restart the scripts are gone; loading them again is the cure.
        await services.scripts.load()
    pong = await services.scripts.call("ping")
    return OK if pong[0] == "PONG" else f"ping.lua answered {pong!r}"


async def _eviction_policy(services: Services) -> str:
    policy = await hotstore.eviction_policy(services.redis)
    if policy != hotstore.REQUIRED_EVICTION_POLICY:
        return f"maxmemory-policy is {policy}, must be {hotstore.REQUIRED_EVICTION_POLICY}"
    return OK


LOST_SAMPLE = 100  # holders of open positions whose hot wallet `hot_state_lost` looks for
LOST_QUERY = text(
    "SELECT array(SELECT user_id FROM cfd_positions WHERE status = 'open' LIMIT :sample),"
    " EXISTS (SELECT FROM cfd_positions WHERE status = 'closed')"
)


async def hot_state_lost(services: Services) -> bool:
    """True when Redis lacks what Postgres says it must hold, so a recover is due: the wallet of a
    holder of open positions (wallets load lazily, so only holders must be there), or the overall
    board once anyone has closed a position. A Redis that lost anything lost all of it, so a
    sample of LOST_SAMPLE holders decides. Hot state written before a holder's count of open
    positions per instrument existed (`held:{userId}`, decision 0094's addendum) counts as lost
    too: the engine would keep the holders index wrong from it, and a recover rebuilds both."""
    async with services.engine.connect() as conn:
        holders, anyone_closed = (await conn.execute(LOST_QUERY, {"sample": LOST_SAMPLE})).one()
    async with services.redis.pipeline(transaction=False) as pipe:
        for user_id in holders:
            pipe.exists(keys.wallet(user_id), keys.held(user_id))
        pipe.exists(keys.BOARD_OVERALL)
        *held, board = await pipe.execute()
    return any(found < 2 for found in held) or bool(anyone_closed and not board)


async def _hot_state(services: Services) -> str:
    if not await services.redis.exists(keys.INSTRUMENT_IDX):
        return f"{keys.INSTRUMENT_IDX} is empty: run `ftl recover` (or `ftl seed`)"
    try:
        lost = await hot_state_lost(services)
    except (SQLAlchemyError, OSError):
        return OK  # NOTE: Postgres is down: its own check says so, this one cannot tell
    missing = "wallets, counts or boards that Postgres holds are missing: run `ftl recover`"
    return missing if lost else OK


CHECKS: dict[str, Callable[[Services], Awaitable[str]]] = {
    "postgres": _postgres,
    "redis": _redis,
    "scripts": _scripts,
    "redisPolicy": _eviction_policy,
    "hotState": _hot_state,
}


async def _run(check: Callable[[Services], Awaitable[str]], services: Services) -> str:
    try:
        return await asyncio.wait_for(check(services), CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure is a "not ready" with its reason
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


async def readiness(services: Services) -> dict[str, str]:
    """Each check's outcome: "ok" or a one-line reason."""
    names = list(CHECKS)
    outcomes = await asyncio.gather(*(_run(CHECKS[n], services) for n in names))
    return dict(zip(names, outcomes, strict=True))
