from __future__ import annotations

from decimal import Decimal

from ftl.market import pre_match_base_price_cents


def test_pre_match_base_price_is_50_plus_18_per_form_point() -> None:
    assert pre_match_base_price_cents(Decimal("0")) == 5_000
    assert pre_match_base_price_cents(Decimal("14.5")) == 31_100
    assert pre_match_base_price_cents(Decimal("25")) == 50_000


def test_form_index_is_clamped_to_0_25() -> None:
    assert pre_match_base_price_cents(Decimal("-3")) == 5_000
    assert pre_match_base_price_cents(Decimal("40")) == 50_000
