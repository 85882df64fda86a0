"""The simulator's match clock, its seeded matches and its scenario checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftl.ops.scenarios import (
    Scenario,
    ScenarioError,
    generate_scenario,
    load_scenario,
    match_clock,
    resume_state,
    scenario_minutes,
)
from ftl.ops.seed import load_demo_data
from ftl.ops.simulator import Simulator
from ftl.sportmonks.payload import LIVE_STATE_IDS, MatchPhase, match_phase, parse_fixtures


@pytest.mark.parametrize(
    ("elapsed", "phase", "minute"),
    [
        (-1, MatchPhase.SCHEDULED, None),
        (0, MatchPhase.LIVE, 1),
        (44.9, MatchPhase.LIVE, 45),
        (50, MatchPhase.LIVE, 45),  # half-time is live
        (60, MatchPhase.LIVE, 46),
        (104.9, MatchPhase.LIVE, 90),
        (105, MatchPhase.FULL_TIME, 90),
    ],
)
def test_the_match_clock(elapsed: float, phase: MatchPhase, minute: int | None) -> None:
    state_id, shown = match_clock(elapsed)
    assert (match_phase(state_id), shown) == (phase, minute)


def test_generated_matches_are_seeded_and_use_the_seeded_players() -> None:
    first, again, other = generate_scenario(7), generate_scenario(7), generate_scenario(8)
    assert first == again
    assert first.fixtures[0].events != other.fixtures[0].events
    squads = {p["sportmonksPlayerId"] for t in load_demo_data()["teams"] for p in t["players"]}
    fixture_ids = {f["sportmonksFixtureId"] for f in load_demo_data()["fixtures"]}
    for fixture in first.fixtures:
        assert fixture.fixture_id in fixture_ids
        assert {e.player for e in fixture.events} <= squads
        assert fixture.events, "ninety minutes of football produce something"


def test_every_generated_minute_parses_strictly() -> None:
    clock = [0.0]
    simulator = Simulator(generate_scenario(3), speed=60, clock_s=lambda: clock[0])
    includes = {"participants", "scores", "periods", "lineups.details", "events"}
    for second in range(0, 130, 5):
        clock[0] = float(second)
        fixtures = parse_fixtures({"data": simulator.inplay(includes)}, with_players=True)
        assert all(f.state_id in LIVE_STATE_IDS or f.minute in (None, 90) for f in fixtures)


LAUTARO = 184020


@pytest.mark.parametrize(
    ("fixture_id", "event"),
    [
        (1, {"minute": 5, "type": "goal", "player": LAUTARO}),
        (19000003, {"minute": 5, "type": "goal", "player": 1}),
        (19000003, {"minute": 95, "type": "goal", "player": LAUTARO}),
        (19000003, {"minute": 5, "type": "dive", "player": LAUTARO}),
        (19000003, {"minute": 5, "type": "stat", "player": LAUTARO, "stat": "dribbles"}),
    ],
)
def test_a_bad_scenario_is_refused(
    tmp_path: Path, fixture_id: int, event: dict[str, object]
) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(
        json.dumps({"fixtures": [{"sportmonksFixtureId": fixture_id, "events": [event]}]})
    )
    with pytest.raises(ScenarioError):
        load_scenario(path)


def test_the_recorded_scenario_loads() -> None:
    path = Path(__file__).resolve().parents[1] / "fixtures" / "sportmonks" / "scripted_match.json"
    scenario = load_scenario(path)
    assert isinstance(scenario, Scenario)
    assert [f.fixture_id for f in scenario.fixtures] == [19000003, 19000004]


def test_a_restart_resumes_by_the_clock_and_a_finished_run_starts_afresh(tmp_path: Path) -> None:
    scenario = generate_scenario(3)
    state = tmp_path / "sim.json"
    speed = 6.0  # a match minute every 10 real seconds
    assert resume_state(state, "3@6", scenario, speed, now_s=1_000.0) == 0.0, "a new run"
    assert resume_state(state, "3@6", scenario, speed, now_s=2_500.0) == 1_500.0, "resumed"
    assert resume_state(state, "4@6", scenario, speed, now_s=2_600.0) == 0.0, "another scenario"
    over = 2_600.0 + scenario_minutes(scenario) * 60 / speed
    assert resume_state(state, "3@6", scenario, speed, now_s=over) == 0.0, "all over: afresh"
    clock = [0.0]
    resumed = Simulator(scenario, speed=speed, clock_s=lambda: clock[0], played_s=1_500.0)
    assert resumed.elapsed_minutes() == 150.0, "1,500 real seconds at 6x"
    finished = [f for f in scenario.fixtures if f.kickoff_minute + f.length + 15 <= 150.0]
    listed = {f["id"] for f in resumed.inplay({"participants"})}
    assert finished and not listed & {f.fixture_id for f in finished}, "no replay"
    assert listed, "the matches under way are resumed where they are"


def test_a_generated_knockout_goes_through_extra_time_and_penalties() -> None:
    clock = [0.0]
    scenario = generate_scenario(3, fixture_count=1)
    simulator = Simulator(scenario, speed=60, clock_s=lambda: clock[0])
    includes = {"participants", "scores", "periods", "lineups.details", "events", "stage"}
    states: list[int] = []
    for second in range(0, 170):  # listed until 15 minutes after the end (156)
        clock[0] = float(second)
        [fixture] = parse_fixtures({"data": simulator.inplay(includes)}, with_players=True)
        if not states or states[-1] != fixture.state_id:
            states.append(fixture.state_id)
        assert fixture.knockout is True
    assert states == [2, 3, 22, 5, 4, 6, 21, 23, 9, 8]
