"""The demo World Cup 2026 data set is a playable market (issue: at least 8 full squads)."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from ftl.ops.seed import load_demo_data
from ftl.sportmonks.payload import is_knockout_stage

SQUAD_SIZE = 23


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return load_demo_data()


def test_at_least_eight_national_teams_with_full_squads(data: dict[str, Any]) -> None:
    assert len(data["teams"]) >= 8
    for team in data["teams"]:
        assert len(team["players"]) == SQUAD_SIZE, team["code"]
        positions = Counter(p["position"] for p in team["players"])
        assert set(positions) == {"GK", "DEF", "MID", "FWD"}, team["code"]
        assert positions["GK"] >= 2


def test_player_ids_and_names_are_unique(data: dict[str, Any]) -> None:
    players = [p for team in data["teams"] for p in team["players"]]
    assert len({p["sportmonksPlayerId"] for p in players}) == len(players)
    assert len({p["name"] for p in players}) == len(players)


def test_form_indexes_lie_in_the_price_range(data: dict[str, Any]) -> None:
    for team in data["teams"]:
        for player in team["players"]:
            assert Decimal("0") <= Decimal(str(player["formIndex"])) <= Decimal("25")


def test_fixtures_are_between_known_teams(data: dict[str, Any]) -> None:
    codes = {team["code"] for team in data["teams"]}
    assert len(data["fixtures"]) >= 4
    assert len({f["sportmonksFixtureId"] for f in data["fixtures"]}) == len(data["fixtures"])
    for fixture in data["fixtures"]:
        assert fixture["home"] in codes and fixture["away"] in codes
        assert fixture["home"] != fixture["away"]


def test_the_demo_plays_knockouts_from_the_round_of_32_to_the_final(data: dict[str, Any]) -> None:
    knockouts = [f["stage"] for f in data["fixtures"] if is_knockout_stage(f["stage"])]
    assert knockouts[0] == "Round of 32" and knockouts[-1] == "Final"
    assert {"Round of 16", "Quarter-finals", "Semi-finals"} <= set(knockouts)
    group = [f for f in data["fixtures"] if not is_knockout_stage(f["stage"])]
    assert group and max(f["kickoffAt"] for f in group) < min(
        f["kickoffAt"] for f in data["fixtures"] if is_knockout_stage(f["stage"])
    ), "the knockouts follow the group stage"
