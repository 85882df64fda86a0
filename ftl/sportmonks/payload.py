"""The parser: Sportmonks v3 JSON -> fixtures with per-player match stats. Pure, no I/O.

Only an envelope that cannot be read (not an object, no `data` list) raises MalformedPayload, a
breaker failure. Below it, tolerance is per item (SPEC §5.2, docs/decisions/0101): an unreadable
fixture, lineup row, detail or event is skipped and counted by reason in `ParsedFeed.skipped`,
and the rest of the body is used. Fields and types we do not use are ignored: the live API adds
them freely. Ids are those of the real states catalogue (tests/fixtures/sportmonks/states.json;
what real bodies hold: facts.md beside it); endpoints: docs/decisions/0030-sportmonks-endpoints.md.
"""

from __future__ import annotations

from collections import Counter
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
    TACKLES = "tackles"
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


# `lineups.details[].type_id` -> stat (player statistics of the fixture so far). Goals (52) are
# NOT read here: they come from the events, like cards, so each is counted once.
DETAIL_TYPE_IDS: dict[int, Stat] = {
    79: Stat.ASSISTS,
    86: Stat.SHOTS_ON_TARGET,
    117: Stat.KEY_PASSES,
    78: Stat.TACKLES,  # "number of tackles": all tackles, not tackles won
    100: Stat.INTERCEPTIONS,
    101: Stat.CLEARANCES,
    107: Stat.AERIALS_WON,
    57: Stat.SAVES,
    104: Stat.SAVES_INSIDE_BOX,
}
MINUTES_PLAYED_TYPE_ID = 119
# `events[].type_id` -> stat. A second yellow (21) is a red card on top of the first yellow (19).
EVENT_TYPE_IDS: dict[int, Stat] = {
    14: Stat.GOALS,
    16: Stat.GOALS,  # a penalty scored
    15: Stat.OWN_GOALS,
    17: Stat.PENALTIES_MISSED,
    19: Stat.YELLOW_CARDS,
    20: Stat.RED_CARDS,
    21: Stat.RED_CARDS,
}
# Event types we know and do not score: VAR, substitution, and the shoot-out kicks (22 miss,
# 23 goal), which count for nobody's matchScore.
IGNORED_EVENT_TYPE_IDS = frozenset({10, 18, 22, 23})
STARTING_LINEUP_TYPE_ID = 11

# Fixture states (`state_id`, states.json). There is no 24.
NOT_STARTED_STATE_IDS = frozenset({1, 13, 26})  # NS, TBA, PENDING
# Prices move: 1st half, HT, BREAK, ET, AET break, 2nd half, ET 2nd half, penalties, pen. break.
LIVE_STATE_IDS = frozenset({2, 3, 4, 6, 9, 21, 22, 23, 25})
# FT, AET, FT_PEN, WO, AWARDED. NOTE: 5 FT also shows briefly before BREAK when a knockout goes to
# extra time: ftl.market.matches decides whether a 5 is final (the brief-FT rule, SPEC §5.2).
FULL_TIME_STATE_IDS = frozenset({5, 7, 8, 14, 17})
FT_STATE_ID = 5
# Prices stay, instruments degraded: suspended, delayed, interrupted, awaiting updates.
HOLD_STATE_IDS = frozenset({11, 16, 18, 19})
# Cancelled, abandoned: after kick-off, closed out without re-basing (SPEC §1.7).
ABANDONED_STATE_IDS = frozenset({12, 15})

MAX_ID = 2**53  # ids travel through JSON and Lua doubles
MAX_STAT = 1_000  # no player makes 1,000 of anything in one match: larger is corrupt data
MAX_GOALS = 99
MAX_MINUTE = 200


class SkipReason(Enum):
    """Why one item of a body was skipped (label of `ftl_sportmonks_skipped_total`)."""

    FIXTURE_UNREADABLE = "fixture_unreadable"
    FIXTURE_DUPLICATE = "fixture_duplicate"
    LINEUP_UNREADABLE = "lineup_unreadable"
    LINEUP_DUPLICATE = "lineup_duplicate"
    DETAIL_UNREADABLE = "detail_unreadable"
    DETAIL_DUPLICATE = "detail_duplicate"
    EVENT_UNREADABLE = "event_unreadable"
    EVENT_UNKNOWN_TYPE = "event_unknown_type"
    EVENT_WITHOUT_PLAYER = "event_without_player"  # e.g. a card shown to a coach
    EVENT_PLAYER_NOT_IN_LINEUPS = "event_player_not_in_lineups"
    EVENT_DUPLICATE = "event_duplicate"


class _Skip(Exception):
    """One item cannot be read; the caller skips it for `reason`."""

    def __init__(self, reason: SkipReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class MatchPhase(Enum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    FULL_TIME = "full_time"
    HOLD = "hold"  # suspended, delayed, interrupted, awaiting updates: prices stay, degraded
    ABANDONED = "abandoned"  # cancelled or abandoned: after kick-off, closed out, no re-basing
    OTHER = "other"  # postponed, deleted, ...: neither live nor to be closed out


def match_phase(state_id: int) -> MatchPhase:
    """The phase of a state as the feed says it; the brief-FT rule (a 5 in a level knockout is
    not final yet) needs the fixture's knockout flag and is applied in ftl.market.matches."""
    if state_id in LIVE_STATE_IDS:
        return MatchPhase.LIVE
    if state_id in FULL_TIME_STATE_IDS:
        return MatchPhase.FULL_TIME
    if state_id in HOLD_STATE_IDS:
        return MatchPhase.HOLD
    if state_id in ABANDONED_STATE_IDS:
        return MatchPhase.ABANDONED
    if state_id in NOT_STARTED_STATE_IDS:
        return MatchPhase.SCHEDULED
    return MatchPhase.OTHER


def is_knockout_stage(name: str) -> bool:
    """World Cup 2026: the group stage, then knockouts from the round of 32 to the final."""
    return "group" not in name.casefold()


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
    knockout: bool | None = None  # from the `stage` include; None when the body has no stage

    @property
    def phase(self) -> MatchPhase:
        return match_phase(self.state_id)

    @property
    def level(self) -> bool:
        return self.home_goals == self.away_goals

    def goals_against(self, team_id: int) -> int:
        return self.away_goals if team_id == self.home_team_id else self.home_goals


@dataclass(frozen=True)
class ParsedFeed:
    fixtures: list[FeedFixture]
    skipped: Counter[SkipReason] = field(default_factory=Counter, hash=False)


def parse_feed(payload: Any, *, with_players: bool) -> ParsedFeed:
    """The fixtures of a `livescores/*` or `fixtures/*` answer, and what was skipped.

    `with_players` demands the `lineups` and `events` includes (the in-play poll): a fixture
    without them is skipped, so a player's price never moves on half a body. Without it they are
    not read (kick-off watch). `participants`, `scores` and `periods` are always required.
    """
    top = _object(payload, "$")
    if "data" not in top and isinstance(top.get("message"), str):
        return ParsedFeed([])  # NOTE: Sportmonks answers an empty result with a message, no `data`
    items = _list(top.get("data"), "data")
    skipped: Counter[SkipReason] = Counter()
    fixtures: dict[int, FeedFixture] = {}
    for i, item in enumerate(items):
        try:
            fixture = _fixture(item, f"data[{i}]", with_players, skipped)
        except MalformedPayload:
            skipped[SkipReason.FIXTURE_UNREADABLE] += 1
            continue
        if fixture.fixture_id in fixtures:
            skipped[SkipReason.FIXTURE_DUPLICATE] += 1
            continue
        fixtures[fixture.fixture_id] = fixture
    return ParsedFeed(list(fixtures.values()), skipped)


def parse_fixtures(payload: Any, *, with_players: bool) -> list[FeedFixture]:
    return parse_feed(payload, with_players=with_players).fixtures


def _fixture(
    value: Any, path: str, with_players: bool, skipped: Counter[SkipReason]
) -> FeedFixture:
    raw = _object(value, path)
    fixture_id = _integer(raw.get("id"), f"{path}.id", 1, MAX_ID)
    state_id = _integer(raw.get("state_id"), f"{path}.state_id", 1, MAX_ID)
    home_team_id, away_team_id = _participants(raw.get("participants"), f"{path}.participants")
    home_goals, away_goals = _scores(raw.get("scores"), f"{path}.scores")
    minute = _minute(raw.get("periods"), f"{path}.periods")
    players: tuple[PlayerLine, ...] = ()
    if with_players:
        players = _players(raw, path, {home_team_id, away_team_id}, skipped)
    return FeedFixture(
        fixture_id,
        state_id,
        home_team_id,
        away_team_id,
        home_goals,
        away_goals,
        minute,
        players,
        _knockout(raw.get("stage")),
    )


def _knockout(stage: Any) -> bool | None:
    if isinstance(stage, dict) and isinstance(stage.get("name"), str):
        return is_knockout_stage(stage["name"])
    return None


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


_Line = tuple[int, bool, int | None, dict[Stat, int]]


def _players(
    raw: dict[str, Any], path: str, teams: set[int], skipped: Counter[SkipReason]
) -> tuple[PlayerLine, ...]:
    lineups = _list(raw.get("lineups"), f"{path}.lineups")
    events = _list(raw.get("events"), f"{path}.events")
    lines: dict[int, _Line] = {}
    for item in lineups:
        try:
            player_id, line = _lineup(item, teams, skipped)
        except _Skip as skip:
            skipped[skip.reason] += 1
            continue
        if player_id in lines:
            skipped[SkipReason.LINEUP_DUPLICATE] += 1
            continue
        lines[player_id] = line
    counted: set[int] = set()
    for item in events:
        try:
            scored = _event(item, lines, counted)
        except _Skip as skip:
            skipped[skip.reason] += 1
            continue
        if scored is not None:
            player_id, stat = scored
            counts = lines[player_id][3]
            counts[stat] = counts.get(stat, 0) + 1
    return tuple(
        PlayerLine(player_id, team_id, started, minutes, stats)
        for player_id, (team_id, started, minutes, stats) in lines.items()
    )


def _lineup(value: Any, teams: set[int], skipped: Counter[SkipReason]) -> tuple[int, _Line]:
    unreadable = _Skip(SkipReason.LINEUP_UNREADABLE)
    if not isinstance(value, dict):
        raise unreadable
    player_id = _readable_int(value.get("player_id"), 1, MAX_ID, unreadable)
    team_id = _readable_int(value.get("team_id"), 1, MAX_ID, unreadable)
    kind = _readable_int(value.get("type_id"), 1, MAX_ID, unreadable)
    details = value.get("details")
    if team_id not in teams or not isinstance(details, list):
        raise unreadable
    stats: dict[Stat, int] = {}
    minutes: int | None = None
    seen: set[int] = set()
    for item in details:
        try:
            type_id, count = _detail(item)
        except _Skip as skip:
            skipped[skip.reason] += 1
            continue
        if type_id is None:
            continue
        if type_id in seen:
            skipped[SkipReason.DETAIL_DUPLICATE] += 1
            continue
        seen.add(type_id)
        stat = DETAIL_TYPE_IDS.get(type_id)
        if stat is None:
            minutes = count
        else:
            stats[stat] = count
    return player_id, (team_id, kind == STARTING_LINEUP_TYPE_ID, minutes, stats)


def _detail(value: Any) -> tuple[int | None, int]:
    """(type id, count) of a detail we read; (None, 0) for a statistic we do not use."""
    unreadable = _Skip(SkipReason.DETAIL_UNREADABLE)
    if not isinstance(value, dict):
        raise unreadable
    type_id = _readable_int(value.get("type_id"), 1, MAX_ID, unreadable)
    if type_id not in DETAIL_TYPE_IDS and type_id != MINUTES_PLAYED_TYPE_ID:
        return None, 0
    data = value.get("data")
    if not isinstance(data, dict):
        raise unreadable
    count = data.get("value")
    # NOTE: a count may arrive as a float (3.0); a fraction or an object is not a count.
    if isinstance(count, float) and count.is_integer():
        count = int(count)
    return type_id, _readable_int(count, 0, MAX_STAT, unreadable)


def _event(value: Any, lines: Mapping[int, _Line], counted: set[int]) -> tuple[int, Stat] | None:
    """(player, stat) an event scores, None for one that scores nothing; each id counts once."""
    unreadable = _Skip(SkipReason.EVENT_UNREADABLE)
    if not isinstance(value, dict):
        raise unreadable
    type_id = _readable_int(value.get("type_id"), 1, MAX_ID, unreadable)
    stat = EVENT_TYPE_IDS.get(type_id)
    if stat is None:
        if type_id in IGNORED_EVENT_TYPE_IDS:
            return None
        raise _Skip(SkipReason.EVENT_UNKNOWN_TYPE)
    event_id = _readable_int(value.get("id"), 1, MAX_ID, unreadable)
    if event_id in counted:
        raise _Skip(SkipReason.EVENT_DUPLICATE)
    if value.get("player_id") is None:
        raise _Skip(SkipReason.EVENT_WITHOUT_PLAYER)
    player_id = _readable_int(value.get("player_id"), 1, MAX_ID, unreadable)
    if player_id not in lines:
        raise _Skip(SkipReason.EVENT_PLAYER_NOT_IN_LINEUPS)
    counted.add(event_id)
    return player_id, stat


def _readable_int(value: Any, minimum: int, maximum: int, skip: _Skip) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise skip
    return value


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
