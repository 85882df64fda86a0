"""SPEC §1.3: matchScore by position, the live base price and post-match re-basing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ftl.core.errors import InvalidInput
from ftl.market.scoring import (
    DEFAULT_WEIGHTS,
    Weights,
    live_base_price_cents,
    live_prices,
    match_score,
    post_match_rebase,
)
from ftl.sportmonks.payload import FeedFixture, PlayerLine, Stat

BASE = 31_100  # a formIndex 14.5 player: 50 + 14.5 × 18 = 311.00

# SPEC §1.3, written out again here so the test does not read the table it checks.
SPEC_WEIGHTS = [
    ("FWD", Stat.GOALS, "3.0"),
    ("FWD", Stat.ASSISTS, "2.0"),
    ("FWD", Stat.SHOTS_ON_TARGET, "1.5"),
    ("FWD", Stat.KEY_PASSES, "1.0"),
    ("DEF", Stat.TACKLES, "2.0"),
    ("DEF", Stat.INTERCEPTIONS, "2.0"),
    ("DEF", Stat.CLEARANCES, "1.5"),
    ("DEF", Stat.AERIALS_WON, "1.0"),
    ("GK", Stat.SAVES, "3.0"),
    ("GK", Stat.SAVES_INSIDE_BOX, "2.5"),
    ("MID", Stat.GOALS, "2.5"),
    ("MID", Stat.ASSISTS, "2.0"),
    ("MID", Stat.KEY_PASSES, "1.5"),
    ("MID", Stat.TACKLES, "1.0"),
    ("MID", Stat.INTERCEPTIONS, "1.0"),
]
EVERY_POSITION = [
    (Stat.YELLOW_CARDS, "-1.0"),
    (Stat.RED_CARDS, "-3.0"),
    (Stat.OWN_GOALS, "-2.0"),
    (Stat.PENALTIES_MISSED, "-2.0"),
]


def test_a_goal_by_a_forward_moves_his_price_by_0_7_x_3_x_18_points() -> None:
    score = match_score("FWD", {Stat.GOALS: 1}, DEFAULT_WEIGHTS)
    assert score == Decimal("3.0")
    assert live_base_price_cents(BASE, score) - BASE == 3_780  # 0.7 × 3.0 × 18 = 37.80


@pytest.mark.parametrize(("position", "stat", "weight"), SPEC_WEIGHTS)
def test_each_position_scores_its_own_stats(position: str, stat: Stat, weight: str) -> None:
    assert match_score(position, {stat: 1}, DEFAULT_WEIGHTS) == Decimal(weight)
    assert match_score(position, {stat: 4}, DEFAULT_WEIGHTS) == 4 * Decimal(weight)


@pytest.mark.parametrize("position", ["GK", "DEF", "MID", "FWD"])
def test_stats_outside_a_positions_table_score_nothing(position: str) -> None:
    listed = {stat for pos, stat, _ in SPEC_WEIGHTS if pos == position}
    others = {s: 3 for s in Stat if s not in listed and s not in dict(EVERY_POSITION)}
    others.pop(Stat.CLEAN_SHEET)
    assert match_score(position, others, DEFAULT_WEIGHTS) == 0


@pytest.mark.parametrize("position", ["GK", "DEF", "MID", "FWD"])
@pytest.mark.parametrize(("stat", "weight"), EVERY_POSITION)
def test_cards_own_goals_and_missed_penalties_cost_every_position(
    position: str, stat: Stat, weight: str
) -> None:
    score = match_score(position, {stat: 1}, DEFAULT_WEIGHTS)
    assert score == Decimal(weight)
    expected = int(Decimal("0.7") * Decimal(weight) * 18 * 100)
    assert live_base_price_cents(BASE, score) - BASE == expected


def test_the_live_base_is_clamped_to_50_and_500() -> None:
    assert live_base_price_cents(6_000, Decimal("-10")) == 5_000  # 60 − 126 → 50
    assert live_base_price_cents(48_000, Decimal("10")) == 50_000  # 480 + 126 → 500
    assert live_base_price_cents(5_000, Decimal("0")) == 5_000
    assert live_base_price_cents(49_000, Decimal("0.75")) == 49_945  # just under the ceiling


def test_live_base_rounds_to_the_cent_half_away_from_zero() -> None:
    weights = Weights.from_json({**DEFAULT_WEIGHTS.to_json(), "FWD": {"goals": "0.01"}})
    score = match_score("FWD", {Stat.GOALS: 1}, weights)
    assert live_base_price_cents(BASE, score) == BASE + 13  # 0.126 points → 0.13
    assert live_base_price_cents(BASE, -score) == BASE - 13


def line(player_id: int, team_id: int, stats: dict[Stat, int], started: bool = True) -> PlayerLine:
    return PlayerLine(player_id, team_id, started, 90 if started else None, stats)


def fixture(home_goals: int, away_goals: int, players: list[PlayerLine]) -> FeedFixture:
    return FeedFixture(1, 5, 10, 20, home_goals, away_goals, 90, tuple(players))


class Priced:
    def __init__(self, position: str, base_price_cents: int) -> None:
        self.position = position
        self.base_price_cents = base_price_cents


def test_clean_sheet_goes_to_a_goalkeeper_at_full_time_only() -> None:
    keeper, defender = line(1, 10, {}), line(2, 10, {})
    game = fixture(2, 0, [keeper, defender])
    instruments = {1: Priced("GK", BASE), 2: Priced("DEF", BASE)}
    live = {p.player_id: p for p in live_prices(game, instruments, DEFAULT_WEIGHTS)}
    final = {
        p.player_id: p for p in live_prices(game, instruments, DEFAULT_WEIGHTS, at_full_time=True)
    }
    assert live[1].match_score == 0, "no clean sheet while the match is on"
    assert final[1].match_score == Decimal("4.0")
    assert final[1].live_base_price_cents == BASE + 5_040  # 0.7 × 4 × 18
    assert final[2].match_score == 0, "defenders get no clean sheet"


def test_no_clean_sheet_after_conceding_or_without_playing() -> None:
    home_keeper, away_keeper, bench_keeper = (
        line(1, 10, {}),
        line(2, 20, {}),
        line(3, 10, {}, False),
    )
    game = fixture(1, 0, [home_keeper, away_keeper, bench_keeper])
    instruments = {n: Priced("GK", BASE) for n in (1, 2, 3)}
    final = {
        p.player_id: p.match_score
        for p in live_prices(game, instruments, DEFAULT_WEIGHTS, at_full_time=True)
    }
    assert final == {1: Decimal("4.0"), 2: Decimal(0), 3: Decimal(0)}


def test_players_without_an_instrument_are_not_priced() -> None:
    game = fixture(0, 0, [line(1, 10, {Stat.GOALS: 1}), line(2, 20, {Stat.GOALS: 1})])
    prices = live_prices(game, {2: Priced("FWD", BASE)}, DEFAULT_WEIGHTS)
    assert [(p.player_id, p.live_base_price_cents) for p in prices] == [(2, BASE + 3_780)]


def test_post_match_rebasing_blends_score_and_form() -> None:
    rebase = post_match_rebase(Decimal("14.5"), Decimal("5.5"))
    assert rebase.form_index == Decimal("8.20")  # 0.7 × 5.5 + 0.3 × 14.5
    assert rebase.base_price_cents == 19_760  # 50 + 8.2 × 18


def test_post_match_form_rounds_half_away_from_zero_and_price_clamps() -> None:
    assert post_match_rebase(Decimal("0"), Decimal("0.05")).form_index == Decimal("0.04")
    negative = post_match_rebase(Decimal("0"), Decimal("-0.05"))
    assert negative.form_index == Decimal("-0.04")
    assert negative.base_price_cents == 5_000, "formIndex below 0 prices as 0"
    assert post_match_rebase(Decimal("25"), Decimal("40")).base_price_cents == 50_000


def test_weights_round_trip_through_json() -> None:
    assert Weights.from_json(DEFAULT_WEIGHTS.to_json()) == DEFAULT_WEIGHTS


def edited(position: str, changes: dict[str, Any]) -> dict[str, Any]:
    table = DEFAULT_WEIGHTS.to_json()
    return {**table, position: {**table.get(position, {}), **changes}}


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ([], "validation_error", "$"),
        ({**DEFAULT_WEIGHTS.to_json(), "COACH": {}}, "unknown_field", "COACH"),
        (
            {k: v for k, v in DEFAULT_WEIGHTS.to_json().items() if k != "MID"},
            "validation_error",
            "MID",
        ),
        (edited("FWD", {"dribbles": 1}), "unknown_field", "FWD.dribbles"),
        (edited("FWD", {"goals": "1.234"}), "validation_error", "FWD.goals"),
        (edited("FWD", {"goals": "NaN"}), "validation_error", "FWD.goals"),
        (edited("FWD", {"goals": "Infinity"}), "validation_error", "FWD.goals"),
        (edited("FWD", {"goals": True}), "validation_error", "FWD.goals"),
        (edited("FWD", {"goals": None}), "validation_error", "FWD.goals"),
        (edited("FWD", {"goals": 101}), "validation_error", "FWD.goals"),
        (edited("FWD", {"goals": "three"}), "validation_error", "FWD.goals"),
        (edited("DEF", {"cleanSheet": 4}), "validation_error", "DEF.cleanSheet"),
        (edited("all", {"cleanSheet": 4}), "validation_error", "all.cleanSheet"),
        ({**DEFAULT_WEIGHTS.to_json(), "GK": [1]}, "validation_error", "GK"),
    ],
)
def test_bad_weights_are_refused_naming_the_field(body: Any, code: str, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        Weights.from_json(body)
    assert refused.value.code == code
    assert refused.value.details["field"] == field


def test_json_numbers_are_read_exactly() -> None:
    weights = Weights.from_json(edited("FWD", {"goals": 1.1}))
    assert weights.weight("FWD", Stat.GOALS) == Decimal("1.1")
