"""The strict parser: Sportmonks v3 JSON -> fixtures with per-player match stats. Pure, no I/O.

Anything we rely on that is missing, of the wrong type or out of range raises MalformedPayload
(never KeyError/TypeError), so a bad body counts as a breaker failure and never moves a price.
Fields and statistic types we do not use are ignored: the live API adds them freely.
Type ids are cited in docs/decisions/0030-sportmonks-endpoints.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ftl.sportmonks.failures import MalformedPayload


class Stat(Enum):
    """The statistics of the scoring table (SPEC §1.3)."""

    GOALS = "goals"
    ASSISTS = "assists"
    SHOTS_ON_TARGET = "shotsOnTarget"
    KEY_PASSES = "keyPasses"
    TACKLES_WON = "tacklesWon"
    INTERCEPTIONS = "interceptions"
    CLEARANCES = "clearances"
    AERIALS_WON = "aerialsWon"
    SAVES = "saves"
    SAVES_INSIDE_BOX = "savesInsideBox"
    CLEAN_SHEET = "cleanSheet"  # derived at full time, never read from the feed
    YELLOW_CARDS = "yellowCards"
    RED_CARDS = "redCards"
    OWN_GOALS = "ownGoals"
    PENALTIES_MISSED = "penaltiesMissed"


# `lineups.details[].type_id` -> stat (player statistics of the fixture so far).
DETAIL_TYPE_IDS: dict[int, Stat] = {
    52: Stat.GOALS,
    79: Stat.ASSISTS,
    86: Stat.SHOTS_ON_TARGET,
    117: Stat.KEY_PASSES,
    78: Stat.TACKLES_WON,
    100: Stat.INTERCEPTIONS,
    101: Stat.CLEARANCES,
    107: Stat.AERIALS_WON,
    57: Stat.SAVES,
    104: Stat.SAVES_INSIDE_BOX,
}
MINUTES_PLAYED_TYPE_ID = 119
# `events[].type_id` -> stat. NOTE: a second yellow (21) is a red card on top of the first yellow.
EVENT_TYPE_IDS: dict[int, Stat] = {
    19: Stat.YELLOW_CARDS,
    20: Stat.RED_CARDS,
    21: Stat.RED_CARDS,
    15: Stat.OWN_GOALS,
    17: Stat.PENALTIES_MISSED,
}
STARTING_LINEUP_TYPE_ID = 11
BENCH_TYPE_ID = 12

# Fixture states (`state_id`).
NOT_STARTED_STATE_IDS = frozenset({1})
LIVE_STATE_IDS = frozenset({2, 3, 4, 6, 9, 21, 22, 25})  # halves, breaks, extra time, penalties
FULL_TIME_STATE_IDS = frozenset({5, 7, 8})  # FT, AET, FT_PEN

MAX_ID = 2**53  # ids travel through JSON and Lua doubles
MAX_STAT = 1_000  # no player makes 1,000 of anything in one match: larger is corrupt data
MAX_GOALS = 99
MAX_MINUTE = 200


class MatchPhase(Enum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    FULL_TIME = "full_time"
    OTHER = "other"  # postponed, cancelled, abandoned, ...: neither live nor to be closed out


def match_phase(state_id: int) -> MatchPhase:
    if state_id in LIVE_STATE_IDS:
        return MatchPhase.LIVE
    if state_id in FULL_TIME_STATE_IDS:
        return MatchPhase.FULL_TIME
    if state_id in NOT_STARTED_STATE_IDS:
        return MatchPhase.SCHEDULED
    return MatchPhase.OTHER


@dataclass(frozen=True)
class PlayerLine:
    """One player of one fixture: who he plays for and his counts so far."""

    player_id: int
    team_id: int
    started: bool
    minutes_played: int | None
    stats: Mapping[Stat, int] = field(hash=False)

    @property
    def took_part(self) -> bool:
        return self.started or bool(self.minutes_played)


@dataclass(frozen=True)
class FeedFixture:
    fixture_id: int
    state_id: int
    home_team_id: int
    away_team_id: int
    home_goals: int
    away_goals: int
    minute: int | None
    players: tuple[PlayerLine, ...]

    @property
    def phase(self) -> MatchPhase:
        return match_phase(self.state_id)

    def goals_against(self, team_id: int) -> int:
        return self.away_goals if team_id == self.home_team_id else self.home_goals


def parse_fixtures(payload: Any, *, with_players: bool) -> list[FeedFixture]:
    """The fixtures of a `livescores/*` or `fixtures/*` answer.

    `with_players` demands the `lineups.details` and `events` includes (the in-play poll);
    without it they are not read (kick-off watch). `participants`, `scores` and `periods` are
    always required.
    """
    top = _object(payload, "$")
    if "data" not in top and isinstance(top.get("message"), str):
        return []  # NOTE: Sportmonks answers an empty result with a message and no `data`
    items = _list(top.get("data"), "data")
    fixtures = [_fixture(item, f"data[{i}]", with_players) for i, item in enumerate(items)]
    ids = [f.fixture_id for f in fixtures]
    if len(set(ids)) != len(ids):
        raise MalformedPayload("data", "the same fixture appears twice")
    return fixtures


def _fixture(value: Any, path: str, with_players: bool) -> FeedFixture:
    raw = _object(value, path)
    fixture_id = _integer(raw.get("id"), f"{path}.id", 1, MAX_ID)
    state_id = _integer(raw.get("state_id"), f"{path}.state_id", 1, MAX_ID)
    home_team_id, away_team_id = _participants(raw.get("participants"), f"{path}.participants")
    home_goals, away_goals = _scores(raw.get("scores"), f"{path}.scores")
    minute = _minute(raw.get("periods"), f"{path}.periods")
    players: tuple[PlayerLine, ...] = ()
    if with_players:
        players = _players(raw, path, {home_team_id, away_team_id})
    return FeedFixture(
        fixture_id, state_id, home_team_id, away_team_id, home_goals, away_goals, minute, players
    )


def _participants(value: Any, path: str) -> tuple[int, int]:
    teams: dict[str, int] = {}
    for i, item in enumerate(_list(value, path)):
        here = f"{path}[{i}]"
        raw = _object(item, here)
        team_id = _integer(raw.get("id"), f"{here}.id", 1, MAX_ID)
        location = _object(raw.get("meta"), f"{here}.meta").get("location")
        if location not in ("home", "away") or location in teams:
            raise MalformedPayload(f"{here}.meta.location", "must be one home and one away")
        teams[location] = team_id
    if len(teams) != 2 or teams["home"] == teams["away"]:
        raise MalformedPayload(path, "must name two different teams, home and away")
    return teams["home"], teams["away"]


def _scores(value: Any, path: str) -> tuple[int, int]:
    goals: dict[str, int] = {}
    for i, item in enumerate(_list(value, path)):
        here = f"{path}[{i}]"
        raw = _object(item, here)
        if raw.get("description") != "CURRENT":
            continue
        score = _object(raw.get("score"), f"{here}.score")
        side = score.get("participant")
        if side not in ("home", "away") or side in goals:
            raise MalformedPayload(f"{here}.score.participant", "one CURRENT score per side")
        goals[side] = _integer(score.get("goals"), f"{here}.score.goals", 0, MAX_GOALS)
    return goals.get("home", 0), goals.get("away", 0)


def _minute(value: Any, path: str) -> int | None:
    latest: int | None = None
    for i, item in enumerate(_list(value, path)):
        here = f"{path}[{i}]"
        raw = _object(item, here)
        ticking = raw.get("ticking")
        if not isinstance(ticking, bool):
            raise MalformedPayload(f"{here}.ticking", "must be true or false")
        minutes = raw.get("minutes")
        if minutes is None:
            continue
        minutes = _integer(minutes, f"{here}.minutes", 0, MAX_MINUTE)
        if ticking:
            return minutes
        latest = minutes if latest is None else max(latest, minutes)
    return latest


def _players(raw: dict[str, Any], path: str, teams: set[int]) -> tuple[PlayerLine, ...]:
    lines: dict[int, tuple[int, bool, int | None, dict[Stat, int]]] = {}
    for i, item in enumerate(_list(raw.get("lineups"), f"{path}.lineups")):
        here = f"{path}.lineups[{i}]"
        entry = _object(item, here)
        player_id = _integer(entry.get("player_id"), f"{here}.player_id", 1, MAX_ID)
        if player_id in lines:
            raise MalformedPayload(f"{here}.player_id", "the same player appears twice")
        team_id = _integer(entry.get("team_id"), f"{here}.team_id", 1, MAX_ID)
        if team_id not in teams:
            raise MalformedPayload(f"{here}.team_id", "not a participant of the fixture")
        kind = _integer(entry.get("type_id"), f"{here}.type_id", 1, MAX_ID)
        stats, minutes = _details(entry.get("details"), f"{here}.details")
        lines[player_id] = (team_id, kind == STARTING_LINEUP_TYPE_ID, minutes, stats)
    for i, item in enumerate(_list(raw.get("events"), f"{path}.events")):
        here = f"{path}.events[{i}]"
        event = _object(item, here)
        stat = EVENT_TYPE_IDS.get(_integer(event.get("type_id"), f"{here}.type_id", 1, MAX_ID))
        if stat is None:
            continue
        player_id = _integer(event.get("player_id"), f"{here}.player_id", 1, MAX_ID)
        if player_id not in lines:
            raise MalformedPayload(f"{here}.player_id", "the player is not in the lineups")
        counts = lines[player_id][3]
        counts[stat] = counts.get(stat, 0) + 1
    return tuple(
        PlayerLine(player_id, team_id, started, minutes, stats)
        for player_id, (team_id, started, minutes, stats) in lines.items()
    )


def _details(value: Any, path: str) -> tuple[dict[Stat, int], int | None]:
    stats: dict[Stat, int] = {}
    minutes: int | None = None
    seen: set[int] = set()
    for i, item in enumerate(_list(value, path)):
        here = f"{path}[{i}]"
        detail = _object(item, here)
        type_id = _integer(detail.get("type_id"), f"{here}.type_id", 1, MAX_ID)
        stat = DETAIL_TYPE_IDS.get(type_id)
        if stat is None and type_id != MINUTES_PLAYED_TYPE_ID:
            continue
        if type_id in seen:
            raise MalformedPayload(f"{here}.type_id", "the same statistic appears twice")
        seen.add(type_id)
        data = _object(detail.get("data"), f"{here}.data")
        count = _integer(data.get("value"), f"{here}.data.value", 0, MAX_STAT)
        if stat is None:
            minutes = count
        else:
            stats[stat] = count
    return stats, minutes


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedPayload(path, "must be an object")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedPayload(path, "must be a list")
    return value


def _integer(value: Any, path: str, minimum: int, maximum: int) -> int:
    # NOTE: bool is an int in Python; `true` is not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedPayload(path, "must be a whole number")
    if not minimum <= value <= maximum:
        raise MalformedPayload(path, f"must be between {minimum} and {maximum}")
    return value
