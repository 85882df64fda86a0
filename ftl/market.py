"""Pure rules of the market (SPEC §1.3–1.4) on integer cents. No I/O: the Lua scripts mirror it."""

from __future__ import annotations

from decimal import Decimal

from ftl.money import to_cents

FORM_INDEX_MAX = Decimal(25)
BASE_PRICE_FLOOR = Decimal(50)
# One score point is worth (500 - 50) / 25 = 18 points of price.
POINTS_PER_SCORE_POINT = Decimal(18)


def pre_match_base_price_cents(form_index: Decimal) -> int:
    """`basePrice = 50 + clamp(formIndex, 0, 25) × 18`, in cents."""
    form = min(max(form_index, Decimal(0)), FORM_INDEX_MAX)
    return to_cents(BASE_PRICE_FLOOR + form * POINTS_PER_SCORE_POINT)
