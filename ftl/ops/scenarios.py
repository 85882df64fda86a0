"""The scenarios the local Sportmonks (ftl/ops/simulator.py) plays: the seeded World Cup fixtures
with their scripted events, recorded as JSON (tests/fixtures/) or generated from a seed, and the
match clock they run on.

Match clock, in simulated minutes from the kick-off: 0–45 first half, 45–60 half-time, 60–105
second half (match minutes 46–90), then full time. `livescores/inplay` lists a fixture from 15
minutes before its kick-off until 15 minutes after full time, like Sportmonks.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftl.ops.seed import load_demo_data
from ftl.sportmonks.payload import (
    DETAIL_TYPE_IDS,
    Stat,
    is_knockout_stage,
)

FIRST_HALF_END = 45.0
SECOND_HALF_START = 60.0  # after 15 minutes of half-time
FULL_TIME = 105.0
# A knockout level after 90 minutes (SPEC §5.2): the brief 5 FT, 4 BREAK, 6 ET (91–105), 21 ET
# break, 23 ET 2nd half (106–120); level still: 9 penalties, then 8 FT_PEN; else 7 AET.
BRIEF_FT_END = FULL_TIME + 1.0
BREAK_END = BRIEF_FT_END + 5.0
ET_FIRST_END = BREAK_END + 15.0
ET_BREAK_END = ET_FIRST_END + 5.0
ET_SECOND_END = ET_BREAK_END + 15.0
PENALTIES_END = ET_SECOND_END + 10.0
INPLAY_WINDOW = 15.0  # minutes listed before kick-off and after full time
TEAM_ID_BASE = 18_000  # team ids: 18_001.. in the order of the demo data
STARTING_XI = {"GK": 1, "DEF": 4, "MID": 4, "FWD": 2}
STATE_IDS = {
    "NS": 1, "1ST": 2, "HT": 3, "BREAK": 4, "FT": 5, "ET": 6, "AET": 7, "FT_PEN": 8, "PEN": 9,
    "ET_BREAK": 21, "2ND": 22, "ET_2ND": 23,
}  # fmt: skip
EVENT_TYPE_IDS = {"goal": 14, "ownGoal": 15, "penaltyMissed": 17, "yellowCard": 19, "redCard": 20}
STAT_NAMES = {stat.value: stat for stat in DETAIL_TYPE_IDS.values()}


@dataclass(frozen=True)
class ScriptedEvent:
    minute: int  # match minute 1–90
    kind: str  # "stat" or a key of EVENT_TYPE_IDS
    player: int
    stat: Stat | None = None
    count: int = 1
    assist: int | None = None


@dataclass(frozen=True)
class Side:
    team_id: int
    code: str
    name: str
    lineup: tuple[tuple[int, str, str], ...]  # (player id, name, position), starters first
    starters: int


@dataclass(frozen=True)
class SimFixture:
    fixture_id: int
    kickoff_minute: float  # simulated minutes after the simulator starts
    home: Side
    away: Side
    events: tuple[ScriptedEvent, ...]
    knockout: bool = False

    def goals(self, up_to_minute: int) -> tuple[int, int]:
        """(home, away) goals of the events up to a match minute."""
        home = away = 0
        home_players = {p[0] for p in self.home.lineup}
        for e in self.events:
            if e.minute > up_to_minute or e.kind not in ("goal", "ownGoal"):
                continue
            for_home = (e.player in home_players) == (e.kind == "goal")
            home, away = home + for_home, away + (not for_home)
        return home, away

    @property
    def extra_time(self) -> bool:
        home, away = self.goals(90)
        return self.knockout and home == away

    @property
    def penalties(self) -> bool:
        home, away = self.goals(120)
        return self.extra_time and home == away

    @property
    def length(self) -> float:
        """Simulated minutes from the kick-off to the final state."""
        if self.penalties:
            return PENALTIES_END
        return ET_SECOND_END if self.extra_time else FULL_TIME


@dataclass
class Scenario:
    fixtures: list[SimFixture] = field(default_factory=list)


def scenario_minutes(scenario: Scenario) -> float:
    """Simulated minutes from the start until the last match has left the in-play list."""
    return max((f.kickoff_minute + f.length + INPLAY_WINDOW for f in scenario.fixtures), default=0)


def resume_state(path: Path, key: str, scenario: Scenario, speed: float, now_s: float) -> float:
    """Real seconds already played of this scenario (`key` names it: seed or file, and speed),
    from the state file a previous run wrote; 0 for a new run, which writes the file. A run whose
    matches are all over starts afresh. NOTE: so a restart never replays finished matches."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        started = float(saved["startedAt"]) if saved.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        started = None
    if started is not None and 0 <= now_s - started < scenario_minutes(scenario) * 60 / speed:
        return now_s - started
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "startedAt": now_s}), encoding="utf-8")
    return 0.0


class ScenarioError(ValueError):
    """A scenario file that cannot be played; the message names the problem."""


def _squads() -> tuple[dict[str, Side], dict[int, dict[str, Any]]]:
    data = load_demo_data()
    sides: dict[str, Side] = {}
    for index, team in enumerate(data["teams"], start=1):
        players = team["players"]
        starters = [
            p
            for position, count in STARTING_XI.items()
            for p in [q for q in players if q["position"] == position][:count]
        ]
        bench = [p for p in players if p not in starters]
        lineup = tuple(
            (p["sportmonksPlayerId"], p["name"], p["position"]) for p in [*starters, *bench]
        )
        sides[team["code"]] = Side(
            TEAM_ID_BASE + index, team["code"], team["name"], lineup, len(starters)
        )
    fixtures = {f["sportmonksFixtureId"]: f for f in data["fixtures"]}
    return sides, fixtures


def load_scenario(path: Path) -> Scenario:
    """A recorded scenario: {"fixtures": [{"sportmonksFixtureId", "kickoffMinute", "events":
    [{"minute", "type": "stat"|"goal"|"ownGoal"|"yellowCard"|"redCard"|"penaltyMissed",
    "player", "stat"?, "count"?, "assist"?}]}]}."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return _scenario(raw)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def _scenario(raw: dict[str, Any]) -> Scenario:
    sides, known = _squads()
    scenario = Scenario()
    for item in raw["fixtures"]:
        fixture_id = int(item["sportmonksFixtureId"])
        if fixture_id not in known:
            raise ScenarioError(f"fixture {fixture_id} is not in the demo data")
        home, away = sides[known[fixture_id]["home"]], sides[known[fixture_id]["away"]]
        knockout = is_knockout_stage(known[fixture_id]["stage"])
        players = {p[0] for p in (*home.lineup, *away.lineup)}
        events = []
        for e in item.get("events", []):
            kind = e["type"]
            if kind != "stat" and kind not in EVENT_TYPE_IDS:
                raise ScenarioError(f"unknown event type {kind!r}")
            assist = e.get("assist")
            if e["player"] not in players or (assist is not None and assist not in players):
                raise ScenarioError(f"a player of {e} does not play fixture {fixture_id}")
            last = 120 if knockout else 90
            if not 1 <= int(e["minute"]) <= last:
                raise ScenarioError(f"minute {e['minute']} is not a match minute (1-{last})")
            events.append(
                ScriptedEvent(
                    int(e["minute"]),
                    kind,
                    int(e["player"]),
                    STAT_NAMES[e["stat"]] if kind == "stat" else None,
                    int(e.get("count", 1)),
                    assist,
                )
            )
        scenario.fixtures.append(
            SimFixture(
                fixture_id,
                float(item.get("kickoffMinute", 0)),
                home,
                away,
                tuple(events),
                knockout,
            )
        )
    return scenario


def generate_scenario(seed: int, fixture_count: int = 4, spacing_minutes: float = 30.0) -> Scenario:
    """Seeded matches: the first `fixture_count` demo fixtures, kicking off `spacing_minutes`
    apart, with goals, assists, shots, passes, defending, saves and cards at football-like rates."""
    sides, known = _squads()
    rng = random.Random(seed)
    # Per team per minute: (chance, event kind, stat, positions that do it).
    rates: list[tuple[float, str, Stat | None, tuple[str, ...]]] = [
        (0.015, "goal", None, ("FWD", "FWD", "MID")),
        (0.05, "stat", Stat.SHOTS_ON_TARGET, ("FWD", "MID")),
        (0.08, "stat", Stat.KEY_PASSES, ("MID", "FWD")),
        (0.10, "stat", Stat.TACKLES, ("DEF", "MID")),
        (0.08, "stat", Stat.INTERCEPTIONS, ("DEF", "MID")),
        (0.08, "stat", Stat.CLEARANCES, ("DEF",)),
        (0.06, "stat", Stat.AERIALS_WON, ("DEF",)),
        (0.04, "stat", Stat.SAVES, ("GK",)),
        (0.02, "stat", Stat.SAVES_INSIDE_BOX, ("GK",)),
        (0.02, "yellowCard", None, ("DEF", "MID")),
        (0.001, "redCard", None, ("DEF", "MID")),
        (0.001, "ownGoal", None, ("DEF",)),
    ]
    scenario = Scenario()
    by_kickoff = sorted(known.values(), key=lambda f: f["kickoffAt"])
    group = [f for f in by_kickoff if not is_knockout_stage(f["stage"])]
    knockouts = [f for f in by_kickoff if is_knockout_stage(f["stage"])]
    # NOTE: the last match is the first knockout, so every demo plays extra time and penalties.
    chosen = [*group[: max(fixture_count - 1, 0)], *knockouts[:1]][:fixture_count]
    for number, fixture in enumerate(chosen):
        home, away = sides[fixture["home"]], sides[fixture["away"]]
        knockout = is_knockout_stage(fixture["stage"])
        events = []
        for minute in range(1, 121 if knockout else 91):
            for side in (home, away):
                starters = side.lineup[: side.starters]
                for chance, kind, stat, positions in rates:
                    if rng.random() >= chance or (knockout and kind in ("goal", "ownGoal")):
                        continue
                    position = rng.choice(positions)
                    player = rng.choice([p for p in starters if p[2] == position])[0]
                    assist = None
                    if kind == "goal" and rng.random() < 0.7:
                        assist = rng.choice([p for p in starters if p[0] != player])[0]
                    events.append(ScriptedEvent(minute, kind, player, stat, 1, assist))
        scenario.fixtures.append(
            SimFixture(
                fixture["sportmonksFixtureId"],
                number * spacing_minutes,
                home,
                away,
                tuple(events) + (_level_goals(home, away) if knockout else ()),
                knockout,
            )
        )
    return scenario


def _level_goals(home: Side, away: Side) -> tuple[ScriptedEvent, ...]:
    """A goal each in normal time and none after: the knockout goes to extra time, then to
    penalties (its other events score no goal)."""
    forward = [next(p[0] for p in side.lineup if p[2] == "FWD") for side in (home, away)]
    return (ScriptedEvent(30, "goal", forward[0]), ScriptedEvent(70, "goal", forward[1]))


def match_clock(elapsed: float, fixture: SimFixture | None = None) -> tuple[int, int | None]:
    """(state id, match minute) `elapsed` simulated minutes after the kick-off."""
    if elapsed < 0:
        return STATE_IDS["NS"], None
    if elapsed < FIRST_HALF_END:
        return STATE_IDS["1ST"], int(elapsed) + 1
    if elapsed < SECOND_HALF_START:
        return STATE_IDS["HT"], 45
    if elapsed < FULL_TIME:
        return STATE_IDS["2ND"], int(elapsed - (SECOND_HALF_START - FIRST_HALF_END)) + 1
    if fixture is None or not fixture.extra_time:
        return STATE_IDS["FT"], 90
    if elapsed < BRIEF_FT_END:
        return STATE_IDS["FT"], 90  # shown briefly before BREAK, as Sportmonks does
    if elapsed < BREAK_END:
        return STATE_IDS["BREAK"], 90
    if elapsed < ET_FIRST_END:
        return STATE_IDS["ET"], 91 + int(elapsed - BREAK_END)
    if elapsed < ET_BREAK_END:
        return STATE_IDS["ET_BREAK"], 105
    if elapsed < ET_SECOND_END:
        return STATE_IDS["ET_2ND"], 106 + int(elapsed - ET_BREAK_END)
    if not fixture.penalties:
        return STATE_IDS["AET"], 120
    return (STATE_IDS["PEN"] if elapsed < PENALTIES_END else STATE_IDS["FT_PEN"]), 120
