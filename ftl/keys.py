"""Every Redis key and pub/sub channel name, in one place.

Money in Redis is integer cents, lots are integer hundredths of a lot ("centilots") and `kMod` is
integer micro-points per lot, so the Lua scripts compute exactly with doubles (all < 2**53).
"""

from __future__ import annotations

from uuid import UUID

INSTRUMENT_IDX = "instrument_idx"  # hash: idx -> instrument id
INSTRUMENT_IDS = "instruments"  # set of every instrument id held in hot state


def instrument(instrument_id: UUID | str) -> str:
    """Hash of one instrument's hot state (fields: see ftl/instruments.py)."""
    return f"instrument:{instrument_id}"


def price_channel(instrument_id: UUID | str) -> str:
    """Pub/sub: every tick of the instrument, as tick JSON (ftl/ticks.py)."""
    return f"price:{instrument_id}"


def portfolio_channel(user_id: UUID | str) -> str:
    """Pub/sub: the user's portfolio frames, already the JSON text the WebSocket client receives:
    {"type": "portfolio", "event": ..., "position": {...}?, "wallet": {...}} (SPEC §7)."""
    return f"portfolio:{user_id}"


PRICE_CHANNEL_PATTERN = "price:*"
PORTFOLIO_CHANNEL_PATTERN = "portfolio:*"
USER_RECONNECT_CHANNEL = "user:reconnect"  # pub/sub: a user id, on his first WebSocket connect


def tick_log(instrument_id: UUID | str) -> str:
    """Sorted set of the instrument's recent ticks: score = seq, member = tick JSON (ftl/ticks.py),
    capped at TICK_LOG_CAP members; serves WebSocket `lastSequence` replay and the margin replay."""
    return f"ticklog:{instrument_id}"


TICK_LOG_CAP = 2_000  # ticks kept per instrument (~66 min of a live match at one tick per 2 s)


def revoked_jti(jti: str) -> str:
    """Set (with a TTL until the token's own expiry) when a token is revoked at logout."""
    return f"jti_block:{jti}"


def last_seen(user_id: UUID | str) -> str:
    return f"last_seen:{user_id}"
