"""Base price from performance (SPEC §1.3): matchScore, the live base and post-match re-basing.

Pure: Decimal in, integer cents out, rounding half away from zero (ftl/core/money.py). The weights
are the operator's table (admin setting `scoring_weights`, ftl/market/weights.py); the defaults
below are SPEC's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from ftl.core.errors import InvalidInput
from ftl.core.money import from_cents, round_cents, to_cents
from ftl.market.rules import (
    BASE_PRICE_FLOOR,
    FORM_INDEX_MAX,
    POINTS_PER_SCORE_POINT,
    pre_match_base_price_cents,
)
from ftl.sportmonks.payload import FeedFixture, PlayerLine, Stat

POSITIONS = ("GK", "DEF", "MID", "FWD")
EVERY_POSITION = "all"  # key of the weights every position shares (cards, own goals, penalties)
LIVE_SHARE = Decimal("0.7")  # share of the match score that moves the live base
FORM_CARRY = Decimal("0.3")  # share of the old formIndex kept at re-basing
LIVE_BASE_CEILING = BASE_PRICE_FLOOR + FORM_INDEX_MAX * POINTS_PER_SCORE_POINT  # 500 points
MAX_ABS_WEIGHT = Decimal(100)
# NOTE: type 78 is all tackles (docs/decisions/0102); a table saved before says "tacklesWon".
LEGACY_STAT_NAMES = {"tacklesWon": Stat.TACKLES}
WEIGHT_DECIMALS = Decimal("0.01")


@dataclass(frozen=True)
class Weights:
    """Score points per unit of each stat, by position, plus those every position shares."""

    positions: Mapping[str, Mapping[Stat, Decimal]] = field(hash=False)
    every_position: Mapping[Stat, Decimal] = field(hash=False)

    def weight(self, position: str, stat: Stat) -> Decimal:
        return self.positions[position].get(stat, Decimal(0)) + self.every_position.get(
            stat, Decimal(0)
        )

    def to_json(self) -> dict[str, dict[str, str]]:
        table = {pos: _stats_json(self.positions[pos]) for pos in POSITIONS}
        return {**table, EVERY_POSITION: _stats_json(self.every_position)}

    @classmethod
    def from_json(cls, value: Any) -> Weights:
        """The operator's table; InvalidInput naming the field on anything off (changes nothing).

        Shape: {"GK": {"saves": "3.0", ...}, "DEF": {...}, "MID": {...}, "FWD": {...},
        "all": {"yellowCards": "-1.0", ...}}; numbers or decimal strings, at most 2 decimals.
        """
        if not isinstance(value, dict):
            raise InvalidInput("validation_error", "Weights must be an object.", {"field": "$"})
        for key in value:
            if key not in (*POSITIONS, EVERY_POSITION):
                raise InvalidInput("unknown_field", f"Unknown position {key!r}.", {"field": key})
        missing = [key for key in (*POSITIONS, EVERY_POSITION) if key not in value]
        if missing:
            raise InvalidInput(
                "validation_error", "Every position needs its weights.", {"field": missing[0]}
            )
        positions = {pos: _stats_from_json(value[pos], pos) for pos in POSITIONS}
        every = _stats_from_json(value[EVERY_POSITION], EVERY_POSITION)
        for key, table in [*positions.items(), (EVERY_POSITION, every)]:
            if key != "GK" and Stat.CLEAN_SHEET in table:
                raise InvalidInput(
                    "validation_error",
                    "The clean sheet is credited to goalkeepers only.",
                    {"field": f"{key}.{Stat.CLEAN_SHEET.value}"},
                )
        return cls(positions, every)


def _d(text: str) -> Decimal:
    return Decimal(text)


DEFAULT_WEIGHTS = Weights(
    positions={
        "FWD": {
            Stat.GOALS: _d("3.0"),
            Stat.ASSISTS: _d("2.0"),
            Stat.SHOTS_ON_TARGET: _d("1.5"),
            Stat.KEY_PASSES: _d("1.0"),
        },
        "DEF": {
            Stat.TACKLES: _d("2.0"),
            Stat.INTERCEPTIONS: _d("2.0"),
            Stat.CLEARANCES: _d("1.5"),
            Stat.AERIALS_WON: _d("1.0"),
        },
        "GK": {
            Stat.SAVES: _d("3.0"),
            Stat.SAVES_INSIDE_BOX: _d("2.5"),
            Stat.CLEAN_SHEET: _d("4.0"),
        },
        "MID": {
            Stat.GOALS: _d("2.5"),
            Stat.ASSISTS: _d("2.0"),
            Stat.KEY_PASSES: _d("1.5"),
            Stat.TACKLES: _d("1.0"),
            Stat.INTERCEPTIONS: _d("1.0"),
        },
    },
    every_position={
        Stat.YELLOW_CARDS: _d("-1.0"),
        Stat.RED_CARDS: _d("-3.0"),
        Stat.OWN_GOALS: _d("-2.0"),
        Stat.PENALTIES_MISSED: _d("-2.0"),
    },
)


def _stats_json(weights: Mapping[Stat, Decimal]) -> dict[str, str]:
    return {stat.value: str(weight) for stat, weight in weights.items()}


def _stats_from_json(value: Any, position: str) -> dict[Stat, Decimal]:
    if not isinstance(value, dict):
        raise InvalidInput(
            "validation_error", "Weights of a position are an object.", {"field": position}
        )
    by_name = {stat.value: stat for stat in Stat} | LEGACY_STAT_NAMES
    weights: dict[Stat, Decimal] = {}
    for name, raw in value.items():
        where = f"{position}.{name}"
        if name not in by_name:
            raise InvalidInput("unknown_field", f"Unknown statistic {name!r}.", {"field": where})
        weights[by_name[name]] = _weight(raw, where)
    return weights


def _weight(raw: Any, where: str) -> Decimal:
    problem = InvalidInput(
        "validation_error",
        f"A weight is a number from -{MAX_ABS_WEIGHT} to {MAX_ABS_WEIGHT} with at most 2 decimals.",
        {"field": where},
    )
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise problem
    try:
        # NOTE: str() first so a JSON float like 1.5 becomes exactly Decimal("1.5").
        weight = Decimal(str(raw))
    except InvalidOperation:
        raise problem from None
    if (
        not weight.is_finite()
        or abs(weight) > MAX_ABS_WEIGHT
        or weight != weight.quantize(WEIGHT_DECIMALS)
    ):
        raise problem
    return weight


class Priced(Protocol):
    """What scoring needs of an instrument (ftl.market.instruments.InstrumentState has it)."""

    @property
    def position(self) -> str: ...

    @property
    def base_price_cents(self) -> int: ...


def match_score(
    position: str, stats: Mapping[Stat, int], weights: Weights, *, clean_sheet: bool = False
) -> Decimal:
    """Σ stat × weight for the position; the clean sheet counts for a goalkeeper only."""
    score = sum(
        (count * weights.weight(position, stat) for stat, count in stats.items()), Decimal(0)
    )
    if clean_sheet and position == "GK":
        score += weights.weight(position, Stat.CLEAN_SHEET)
    return score


def kept_clean_sheet(line: PlayerLine, fixture: FeedFixture, *, at_full_time: bool) -> bool:
    """Credited at full time only, to a player who took part, when his team conceded nothing."""
    return at_full_time and line.took_part and fixture.goals_against(line.team_id) == 0


def live_base_price_cents(base_price_cents: int, score: Decimal) -> int:
    """`liveBasePrice = clamp(basePrice + 0.7 × matchScore × 18, 50, 500)`, in cents."""
    value = from_cents(base_price_cents) + LIVE_SHARE * score * POINTS_PER_SCORE_POINT
    return to_cents(min(max(value, BASE_PRICE_FLOOR), LIVE_BASE_CEILING))


@dataclass(frozen=True)
class Rebase:
    form_index: Decimal
    base_price_cents: int  # also the new liveBasePrice


def post_match_rebase(form_index: Decimal, score: Decimal) -> Rebase:
    """`formIndex ← 0.7 × matchScore + 0.3 × formIndex` (kept to 2 decimals like its column,
    half away from zero), then `basePrice = liveBasePrice = 50 + clamp(formIndex, 0, 25) × 18`."""
    new_form = round_cents(LIVE_SHARE * score + FORM_CARRY * form_index)
    return Rebase(new_form, pre_match_base_price_cents(new_form))


@dataclass(frozen=True)
class LivePrice:
    player_id: int
    match_score: Decimal
    live_base_price_cents: int


def live_prices(
    fixture: FeedFixture,
    instruments: Mapping[int, Priced],
    weights: Weights,
    *,
    at_full_time: bool = False,
) -> list[LivePrice]:
    """matchScore and the new live base of every player of the fixture we have an instrument
    for (keyed by Sportmonks player id); players without one are not priced."""
    prices = []
    for line in fixture.players:
        instrument = instruments.get(line.player_id)
        if instrument is None:
            continue
        clean = kept_clean_sheet(line, fixture, at_full_time=at_full_time)
        score = match_score(instrument.position, line.stats, weights, clean_sheet=clean)
        price = live_base_price_cents(instrument.base_price_cents, score)
        prices.append(LivePrice(line.player_id, score, price))
    return prices
