from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from ftl.core.money import from_cents, round_cents, to_cents


def test_rounds_half_away_from_zero() -> None:
    assert round_cents(Decimal("1.005")) == Decimal("1.01")
    assert round_cents(Decimal("-1.005")) == Decimal("-1.01")
    assert round_cents(Decimal("2.0049")) == Decimal("2.00")
    assert round_cents(Decimal("-0.004")) == Decimal("0.00")


def test_cents_round_trip() -> None:
    assert to_cents(Decimal("311.00")) == 31100
    assert to_cents(Decimal("0.125")) == 13
    assert from_cents(-250) == Decimal("-2.50")


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_every_cent_amount_survives_the_round_trip(cents: int) -> None:
    assert to_cents(from_cents(cents)) == cents
