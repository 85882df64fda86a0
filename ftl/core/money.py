"""Points and prices to the cent: integer cents inside, Decimal at the edges.

Rounding is half away from zero, to the cent (SPEC conventions). Never binary floating point.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def round_cents(value: Decimal) -> Decimal:
    """Round to the cent, half away from zero (Decimal's ROUND_HALF_UP is away from zero)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def to_cents(value: Decimal) -> int:
    """Points as a Decimal to integer cents, rounding half away from zero."""
    return int(round_cents(value) * 100)


def from_cents(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def json_number(cents: int) -> float:
    """Cents as the JSON number clients read (e.g. 123.45), for rendering only, never arithmetic.

    NOTE: for |cents| < 2**53 the shortest repr of cents / 100 is exactly the two-decimal text,
    and it is what the Lua scripts' cjson writes, so REST and frames print the same numbers.
    """
    return cents / 100
