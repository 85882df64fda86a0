"""The strict Sportmonks parser: good payloads become per-player stats; anything else raises
MalformedPayload and nothing else, whatever the bytes (fuzzed with hypothesis)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftl.sportmonks.failures import FailureKind, MalformedPayload
from ftl.sportmonks.payload import MatchPhase, Stat, parse_fixtures


def detail(type_id: int, value: Any) -> dict[str, Any]:
    return {"id": 9, "type_id": type_id, "data": {"value": value}}


def valid_payload() -> dict[str, Any]:
    """One in-play fixture in the v3 shape: home 10 leads away 20 by 1–0 in minute 63."""
    return {
        "data": [
            {
                "id": 19000003,
                "state_id": 22,
                "name": "Argentina vs France",
                "participants": [
                    {"id": 10, "name": "Argentina", "meta": {"location": "home"}},
                    {"id": 20, "name": "France", "meta": {"location": "away"}},
                ],
                "scores": [
                    {"description": "1ST_HALF", "score": {"goals": 1, "participant": "home"}},
                    {"description": "CURRENT", "score": {"goals": 1, "participant": "home"}},
                    {"description": "CURRENT", "score": {"goals": 0, "participant": "away"}},
                ],
                "periods": [
                    {"type_id": 1, "ticking": False, "minutes": 45},
                    {"type_id": 2, "ticking": True, "minutes": 63},
                ],
                "lineups": [
                    {
                        "player_id": 184020,
                        "team_id": 10,
                        "type_id": 11,
                        "details": [
                            detail(52, 1),
                            detail(86, 2),
                            detail(119, 63),
                            detail(118, 7.9),  # rating: not ours, ignored
                        ],
                    },
                    {"player_id": 186004, "team_id": 20, "type_id": 11, "details": []},
                    {"player_id": 186022, "team_id": 20, "type_id": 12, "details": []},
                ],
                "events": [
                    {"type_id": 14, "player_id": 184020, "related_player_id": None, "minute": 12},
                    {"type_id": 19, "player_id": 186004, "minute": 30},
                    {"type_id": 21, "player_id": 186004, "minute": 61},
                    {"type_id": 18, "player_id": None, "minute": 46},  # substitution: ignored
                ],
            }
        ]
    }


def test_a_good_payload_becomes_fixtures_with_player_stats() -> None:
    [fixture] = parse_fixtures(valid_payload(), with_players=True)
    assert (fixture.fixture_id, fixture.phase, fixture.minute) == (19000003, MatchPhase.LIVE, 63)
    assert (fixture.home_goals, fixture.away_goals) == (1, 0)
    players = {p.player_id: p for p in fixture.players}
    assert players[184020].stats == {Stat.GOALS: 1, Stat.SHOTS_ON_TARGET: 2}
    assert players[184020].minutes_played == 63
    assert players[186004].stats == {Stat.YELLOW_CARDS: 1, Stat.RED_CARDS: 1}
    assert players[186022].took_part is False
    assert fixture.goals_against(20) == 1 and fixture.goals_against(10) == 0


def test_an_empty_answer_is_no_fixtures() -> None:
    assert parse_fixtures({"message": "No result(s) found."}, with_players=True) == []
    assert parse_fixtures({"data": []}, with_players=True) == []


def test_the_schedule_needs_no_lineups() -> None:
    payload = valid_payload()
    del payload["data"][0]["lineups"], payload["data"][0]["events"]
    [fixture] = parse_fixtures(payload, with_players=False)
    assert fixture.players == ()
    with pytest.raises(MalformedPayload):
        parse_fixtures(payload, with_players=True)


@pytest.mark.parametrize(
    ("state_id", "phase"),
    [
        (1, "scheduled"),
        (2, "live"),
        (3, "live"),
        (22, "live"),
        (5, "full_time"),
        (8, "full_time"),
        (10, "other"),
    ],
)
def test_states_map_to_phases(state_id: int, phase: str) -> None:
    payload = valid_payload()
    payload["data"][0]["state_id"] = state_id
    assert parse_fixtures(payload, with_players=True)[0].phase is MatchPhase(phase)


def mutate(path: str, value: Any) -> dict[str, Any]:
    payload = valid_payload()
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = payload
    for step in parents:
        target = target[step]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return payload


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("data", {"id": 1}),
        ("data.0", "fixture"),
        ("data.0.id", "19000003"),
        ("data.0.id", 0),
        ("data.0.state_id", True),
        ("data.0.state_id", DELETE),
        ("data.0.participants", [{"id": 10, "meta": {"location": "home"}}]),
        ("data.0.participants.1.meta.location", "home"),
        ("data.0.participants.1.id", 10),
        ("data.0.participants.0.meta", None),
        ("data.0.scores.1.score.goals", -1),
        ("data.0.scores.1.score.goals", 1.5),
        ("data.0.scores.2.score.participant", "home"),
        ("data.0.periods.1.ticking", "yes"),
        ("data.0.periods.1.minutes", 1_000),
        ("data.0.lineups.0.details.0.data.value", "1"),
        ("data.0.lineups.0.details.0.data.value", 2.0),
        ("data.0.lineups.0.details.0.data.value", -3),
        ("data.0.lineups.0.details.0.data.value", 10**9),
        ("data.0.lineups.0.details.0.data", [1]),
        ("data.0.lineups.0.details.1.type_id", 52),
        ("data.0.lineups.0.team_id", 30),
        ("data.0.lineups.1.player_id", 184020),
        ("data.0.lineups.0.details", None),
        ("data.0.events.1.player_id", 999),
        ("data.0.events.1.player_id", None),
        ("data.0.events", DELETE),
    ],
)
def test_schema_violations_are_refused_with_the_path(path: str, value: Any) -> None:
    with pytest.raises(MalformedPayload) as refused:
        parse_fixtures(mutate(path, value), with_players=True)
    assert refused.value.failure is FailureKind.MALFORMED
    assert refused.value.path.startswith("data") or refused.value.path == "$"


def test_the_same_fixture_twice_is_refused() -> None:
    payload = valid_payload()
    payload["data"].append(copy.deepcopy(payload["data"][0]))
    with pytest.raises(MalformedPayload):
        parse_fixtures(payload, with_players=True)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


def parse_or_refuse(payload: Any) -> None:
    try:
        fixtures = parse_fixtures(payload, with_players=True)
    except MalformedPayload:
        return
    assert isinstance(fixtures, list)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_any_json_is_parsed_or_refused_never_crashes(payload: Any) -> None:
    parse_or_refuse(payload)
    parse_or_refuse({"data": [payload]})


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


VALID_PATHS = paths(valid_payload())[1:]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID_PATHS), JSON)
def test_a_good_payload_with_any_part_replaced_is_parsed_or_refused(
    path: tuple[Any, ...], replacement: Any
) -> None:
    payload = valid_payload()
    target: Any = payload
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = replacement
    parse_or_refuse(payload)
