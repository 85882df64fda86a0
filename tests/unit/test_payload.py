"""The Sportmonks parser on bodies shaped like real v3 ones (tests/fixtures/sportmonks/facts.md):
good items become per-player stats; an odd item is skipped and counted; only an unreadable
envelope raises MalformedPayload, and nothing else is raised whatever the bytes (hypothesis)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftl.sportmonks.failures import FailureKind, MalformedPayload
from ftl.sportmonks.payload import (
    ABANDONED_STATE_IDS,
    FULL_TIME_STATE_IDS,
    HOLD_STATE_IDS,
    LIVE_STATE_IDS,
    NOT_STARTED_STATE_IDS,
    MatchPhase,
    SkipReason,
    Stat,
    parse_feed,
    parse_fixtures,
)

# The real `GET /v3/football/states` (a copy of the shared reference material).
STATES = Path(__file__).resolve().parents[1] / "fixtures" / "sportmonks" / "states.json"


def detail(type_id: int, value: Any, detail_id: int = 9) -> dict[str, Any]:
    """A `lineups.details` row as real bodies carry it."""
    return {
        "id": detail_id,
        "fixture_id": 19000003,
        "player_id": 0,
        "team_id": 0,
        "lineup_id": 0,
        "type_id": type_id,
        "data": {"value": value},
    }


def event(event_id: int, type_id: int, player_id: Any, **fields: Any) -> dict[str, Any]:
    """An event with every field a real v3 event carries (facts.md, "Event types")."""
    return {
        "id": event_id,
        "fixture_id": 19000003,
        "period_id": 1,
        "detailed_period_id": 1,
        "participant_id": 10,
        "type_id": type_id,
        "section": "event",
        "player_id": player_id,
        "related_player_id": None,
        "player_name": "",
        "related_player_name": None,
        "result": None,
        "info": None,
        "addition": None,
        "minute": 10,
        "extra_minute": None,
        "injured": None,
        "on_bench": False,
        "coach_id": None,
        "sub_type_id": None,
        "sort_order": event_id,
        **fields,
    }


def valid_payload() -> dict[str, Any]:
    """One in-play fixture in the v3 shape: home 10 leads away 20 by 1–0 in minute 63."""
    return {
        "data": [
            {
                "id": 19000003,
                "state_id": 22,
                "name": "Argentina vs France",
                "participants": [
                    {"id": 10, "name": "Argentina", "meta": {"location": "home", "winner": None}},
                    {"id": 20, "name": "France", "meta": {"location": "away", "winner": None}},
                ],
                "scores": [
                    {"description": "1ST_HALF", "score": {"goals": 1, "participant": "home"}},
                    {
                        "type_id": 1525,
                        "participant_id": 10,
                        "description": "CURRENT",
                        "score": {"goals": 1, "participant": "home"},
                    },
                    {
                        "type_id": 1525,
                        "participant_id": 20,
                        "description": "CURRENT",
                        "score": {"goals": 0, "participant": "away"},
                    },
                ],
                "periods": [
                    {"type_id": 1, "ticking": False, "minutes": 45, "counts_from": 0},
                    {"type_id": 2, "ticking": True, "minutes": 63, "counts_from": 45},
                ],
                "lineups": [
                    {
                        "player_id": 184020,
                        "team_id": 10,
                        "type_id": 11,
                        "details": [
                            detail(52, 1),  # goals: counted from the events, not here
                            detail(86, 2),
                            detail(78, 4.0),  # a count may arrive as a float
                            detail(119, 63),
                            detail(118, 7.9),  # rating: not ours, ignored
                        ],
                    },
                    {"player_id": 186004, "team_id": 20, "type_id": 11, "details": []},
                    {"player_id": 186022, "team_id": 20, "type_id": 12, "details": []},
                ],
                "events": [
                    event(1, 14, 184020, result="1-0"),
                    event(2, 19, 186004, participant_id=20),
                    event(3, 21, 186004, participant_id=20),
                    event(4, 18, None),  # substitution: ignored
                ],
            }
        ]
    }


def test_a_good_payload_becomes_fixtures_with_player_stats() -> None:
    [fixture] = parse_fixtures(valid_payload(), with_players=True)
    assert (fixture.fixture_id, fixture.phase, fixture.minute) == (19000003, MatchPhase.LIVE, 63)
    assert (fixture.home_goals, fixture.away_goals) == (1, 0)
    players = {p.player_id: p for p in fixture.players}
    assert players[184020].stats == {Stat.GOALS: 1, Stat.SHOTS_ON_TARGET: 2, Stat.TACKLES: 4}
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
    feed = parse_feed(payload, with_players=True)
    assert feed.fixtures == [] and feed.skipped == {SkipReason.FIXTURE_UNREADABLE: 1}


@pytest.mark.parametrize(
    ("state_id", "phase"),
    [
        (1, "scheduled"),
        (2, "live"),
        (3, "live"),
        (4, "live"),
        (6, "live"),
        (9, "live"),
        (21, "live"),
        (22, "live"),
        (23, "live"),
        (25, "live"),
        (5, "full_time"),
        (7, "full_time"),
        (8, "full_time"),
        (14, "full_time"),
        (17, "full_time"),
        (11, "hold"),
        (16, "hold"),
        (18, "hold"),
        (19, "hold"),
        (12, "abandoned"),
        (15, "abandoned"),
        (10, "other"),
        (20, "other"),
    ],
)
def test_states_map_to_phases(state_id: int, phase: str) -> None:
    payload = valid_payload()
    payload["data"][0]["state_id"] = state_id
    assert parse_fixtures(payload, with_players=True)[0].phase is MatchPhase(phase)


def test_every_state_we_act_on_is_in_the_real_catalogue_once() -> None:
    catalogue = json.loads(STATES.read_text(encoding="utf-8"))
    ids = {state["id"] for state in catalogue}
    sets = [
        LIVE_STATE_IDS,
        FULL_TIME_STATE_IDS,
        HOLD_STATE_IDS,
        ABANDONED_STATE_IDS,
        NOT_STARTED_STATE_IDS,
    ]
    assert all(s <= ids for s in sets), "every id we act on exists in the real catalogue"
    assert sum(len(s) for s in sets) == len(frozenset().union(*sets)), "no state in two sets"
    names = {state["id"]: state["developer_name"] for state in catalogue}
    assert names[23] == "INPLAY_ET_SECOND_HALF" and 23 in LIVE_STATE_IDS


def test_the_stage_says_knockout() -> None:
    payload = valid_payload()
    assert parse_fixtures(payload, with_players=True)[0].knockout is None
    payload["data"][0]["stage"] = {"id": 77, "name": "Round of 32"}
    assert parse_fixtures(payload, with_players=True)[0].knockout is True
    payload["data"][0]["stage"] = {"id": 76, "name": "Group Stage"}
    assert parse_fixtures(payload, with_players=True)[0].knockout is False


def test_goals_own_goals_and_missed_penalties_come_from_events_once_each() -> None:
    payload = valid_payload()
    payload["data"][0]["events"] += [
        event(5, 16, 184020, result="2-0"),  # a penalty scored
        event(5, 16, 184020, result="2-0"),  # the same event again: counted once
        event(6, 15, 186004, participant_id=20),
        event(7, 17, 186004, participant_id=20),
        event(8, 23, 184020),  # shoot-out goal: scores for nobody
        event(9, 22, 186004, participant_id=20),  # shoot-out miss: costs nobody
    ]
    feed = parse_feed(payload, with_players=True)
    players = {p.player_id: p for p in feed.fixtures[0].players}
    assert players[184020].stats[Stat.GOALS] == 2
    assert players[186004].stats == {
        Stat.YELLOW_CARDS: 1,
        Stat.RED_CARDS: 1,
        Stat.OWN_GOALS: 1,
        Stat.PENALTIES_MISSED: 1,
    }
    assert feed.skipped == {SkipReason.EVENT_DUPLICATE: 1}


def test_odd_items_are_skipped_and_counted_and_the_rest_is_used() -> None:
    payload = valid_payload()
    fixture = payload["data"][0]
    fixture["events"] += [
        event(10, 19, None, coach_id=455),  # a coach's card
        event(11, 19, 999_999),  # a player missing from the lineups
        event(12, 9_999, 184020),  # an event type nobody documented
        event(13, 20, "184020"),
        "not an event",
    ]
    fixture["lineups"][0]["details"] += [
        detail(57, {"total": 3, "goals": 0, "penalties": 0}),  # a season-statistics shape
        detail(86, 5),  # a second row of a statistic already read
        detail(101, -1),
    ]
    fixture["lineups"] += [
        {"player_id": None, "team_id": 10, "type_id": 11, "details": []},
        {"player_id": 184020, "team_id": 10, "type_id": 11, "details": []},
        {"player_id": 186030, "team_id": 30, "type_id": 11, "details": []},
    ]
    fixture["lineups"][1]["details"] = [detail(57, "3")]
    feed = parse_feed(payload, with_players=True)
    players = {p.player_id: p for p in feed.fixtures[0].players}
    assert players[184020].stats == {Stat.GOALS: 1, Stat.SHOTS_ON_TARGET: 2, Stat.TACKLES: 4}
    assert players[186004].stats == {Stat.YELLOW_CARDS: 1, Stat.RED_CARDS: 1}
    assert set(players) == {184020, 186004, 186022}
    assert feed.skipped == {
        SkipReason.EVENT_WITHOUT_PLAYER: 1,
        SkipReason.EVENT_PLAYER_NOT_IN_LINEUPS: 1,
        SkipReason.EVENT_UNKNOWN_TYPE: 1,
        SkipReason.EVENT_UNREADABLE: 2,
        SkipReason.DETAIL_UNREADABLE: 3,
        SkipReason.DETAIL_DUPLICATE: 1,
        SkipReason.LINEUP_UNREADABLE: 2,
        SkipReason.LINEUP_DUPLICATE: 1,
    }


def test_an_unreadable_fixture_is_skipped_and_the_others_are_used() -> None:
    payload = valid_payload()
    broken = copy.deepcopy(payload["data"][0])
    broken["id"], broken["participants"] = 19000004, None
    payload["data"] += [broken, copy.deepcopy(payload["data"][0]), "fixture"]
    feed = parse_feed(payload, with_players=True)
    assert [f.fixture_id for f in feed.fixtures] == [19000003]
    assert feed.skipped == {SkipReason.FIXTURE_UNREADABLE: 2, SkipReason.FIXTURE_DUPLICATE: 1}


@pytest.mark.parametrize("payload", [[], "data", {"data": {"id": 1}}, {"data": None}, {}])
def test_only_an_unreadable_envelope_is_refused(payload: Any) -> None:
    with pytest.raises(MalformedPayload) as refused:
        parse_feed(payload, with_players=True)
    assert refused.value.failure is FailureKind.MALFORMED


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
        ("data.0.lineups", None),
        ("data.0.events", DELETE),
    ],
)
def test_a_fixture_that_cannot_be_read_is_skipped(path: str, value: Any) -> None:
    feed = parse_feed(mutate(path, value), with_players=True)
    assert feed.fixtures == [] and feed.skipped == {SkipReason.FIXTURE_UNREADABLE: 1}


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
