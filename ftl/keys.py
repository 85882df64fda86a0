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
    return f"price:{instrument_id}"


def portfolio_channel(user_id: UUID | str) -> str:
    return f"portfolio:{user_id}"


USER_RECONNECT_CHANNEL = "user:reconnect"
