"""`ftl sim sportmonks`: a local stand-in for the Sportmonks football API v3.

It plays the seeded World Cup fixtures (ftl/ops/data/worldcup2026.json, same fixture and player ids)
minute by minute at a speed factor, from a scenario (ftl/ops/scenarios.py). It answers the
endpoints the client uses with the same JSON shape, and injects faults on request
(`POST /_sim/faults {"kind": ..., "count": n}`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ftl.ops.scenarios import (
    BREAK_END,
    ET_BREAK_END,
    ET_FIRST_END,
    ET_SECOND_END,
    EVENT_TYPE_IDS,
    FIRST_HALF_END,
    FULL_TIME,
    INPLAY_WINDOW,
    PENALTIES_END,
    SECOND_HALF_START,
    Scenario,
    ScriptedEvent,
    Side,
    SimFixture,
    match_clock,
)
from ftl.ops.seed import load_demo_data
from ftl.sportmonks.payload import (
    DETAIL_TYPE_IDS,
    MINUTES_PLAYED_TYPE_ID,
    Stat,
)

API_PREFIX = "/v3/football"
SHOOTOUT_KICKS = 5  # per side; the home side scores all, the away side misses its last
POSITION_IDS = {"GK": 24, "DEF": 25, "MID": 26, "FWD": 27}
# NOTE: real bodies also carry goals (52) in the details; FTL counts goals from the events.
DETAIL_IDS = {stat: type_id for type_id, stat in DETAIL_TYPE_IDS.items()} | {Stat.GOALS: 52}
EVENT_ID_SPAN = 10_000  # event ids: fixture id × span + order (under 2**53 for 8-digit fixtures)
# `rate_limited` answers 429; `odd` adds items real bodies carry (a coach's card, an event of a
# player not in the lineups, a detail whose value is an object), which FTL skips and counts.
FAULT_KINDS = ("server_error", "timeout", "malformed", "schema", "rate_limited", "odd")
RATE_LIMIT_WAIT_S = 2  # what an injected 429 says to wait (`resets_in_seconds`, `Retry-After`)
CALLS_PER_HOUR = 3_000
DEFAULT_PER_PAGE, MAX_PER_PAGE = 25, 50


class Simulator:
    """The state of the simulated feed; `clock_s` is injectable so tests drive the minutes."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        speed: float = 60.0,
        api_token: str = "",
        clock_s: Callable[[], float] = time.monotonic,
        timeout_fault_s: float = 10.0,
        played_s: float = 0.0,
    ) -> None:
        """`played_s`: real seconds of the scenario already played before a restart, so the
        matches resume by the clock instead of replaying from the start (`resume_state`)."""
        self.scenario = scenario
        self.speed = speed
        self.api_token = api_token
        self.clock_s = clock_s
        self.timeout_fault_s = timeout_fault_s
        self.started_s = clock_s() - played_s
        self.started_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=played_s)
        self.faults: deque[str] = deque()
        self.hour, self.calls = 0, 0
        self.lock = threading.Lock()

    def count_call(self) -> dict[str, Any]:
        """`rate_limit` of an answer: Sportmonks counts calls per entity per hour."""
        with self.lock:
            hour = int((self.clock_s() - self.started_s) // 3600)
            if hour != self.hour:
                self.hour, self.calls = hour, 0
            self.calls += 1
            resets_in = 3600 - int((self.clock_s() - self.started_s) % 3600)
            remaining = max(0, CALLS_PER_HOUR - self.calls)
        return {
            "resets_in_seconds": resets_in,
            "remaining": remaining,
            "requested_entity": "Fixture",
        }

    def elapsed_minutes(self) -> float:
        return (self.clock_s() - self.started_s) * self.speed / 60.0

    def inject(self, kind: str, count: int) -> None:
        with self.lock:
            self.faults.extend([kind] * count)

    def next_fault(self) -> str | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None

    def kickoff_at(self, fixture: SimFixture) -> datetime:
        return self.started_at + timedelta(seconds=fixture.kickoff_minute * 60.0 / self.speed)

    def inplay(self, includes: set[str]) -> list[dict[str, Any]]:
        now = self.elapsed_minutes()
        return [
            self.fixture_json(f, includes, now)
            for f in self.scenario.fixtures
            if -INPLAY_WINDOW <= now - f.kickoff_minute < f.length + INPLAY_WINDOW
        ]

    def between(self, start: date, end: date, includes: set[str]) -> list[dict[str, Any]]:
        now = self.elapsed_minutes()
        return [
            self.fixture_json(f, includes, now)
            for f in self.scenario.fixtures
            if start <= self.kickoff_at(f).date() <= end
        ]

    def fixture_json(self, fixture: SimFixture, includes: set[str], now: float) -> dict[str, Any]:
        elapsed = now - fixture.kickoff_minute
        state_id, minute = match_clock(elapsed, fixture)
        played = [e for e in fixture.events if minute is not None and e.minute <= minute]
        kickoff = self.kickoff_at(fixture)
        body: dict[str, Any] = {
            "id": fixture.fixture_id,
            "sport_id": 1,
            "league_id": 732,
            "state_id": state_id,
            "name": f"{fixture.home.name} vs {fixture.away.name}",
            "starting_at": kickoff.strftime("%Y-%m-%d %H:%M:%S"),
            "starting_at_timestamp": int(kickoff.timestamp()),
            "length": 90,
            "placeholder": False,
        }
        if "participants" in includes:
            body["participants"] = [
                {"id": s.team_id, "name": s.name, "short_code": s.code, "meta": {"location": loc}}
                for s, loc in ((fixture.home, "home"), (fixture.away, "away"))
            ]
        if "scores" in includes:
            body["scores"] = _scores(fixture, played, minute is not None)
        if "periods" in includes:
            body["periods"] = _periods(fixture, elapsed, minute)
        if "lineups" in includes or "lineups.details" in includes:
            body["lineups"] = _lineups(fixture, played, minute, "lineups.details" in includes)
        if "events" in includes:
            body["events"] = _events(fixture, played) + _shootout(fixture, elapsed)
        if "stage" in includes:
            body["stage"] = {"id": 77_000 + fixture.knockout, "name": _stage_name(fixture)}
        return body


def _team_of(fixture: SimFixture, player: int) -> Side:
    return fixture.home if player in {p[0] for p in fixture.home.lineup} else fixture.away


def _scores(fixture: SimFixture, played: list[ScriptedEvent], started: bool) -> list[Any]:
    if not started:
        return []
    goals = {fixture.home.team_id: 0, fixture.away.team_id: 0}
    for e in played:
        scorer = _team_of(fixture, e.player)
        if e.kind == "goal":
            goals[scorer.team_id] += 1
        elif e.kind == "ownGoal":
            other = fixture.away if scorer is fixture.home else fixture.home
            goals[other.team_id] += 1
    return [
        {
            "fixture_id": fixture.fixture_id,
            "type_id": 1525,
            "participant_id": side.team_id,
            "score": {"goals": goals[side.team_id], "participant": loc},
            "description": "CURRENT",
        }
        for side, loc in ((fixture.home, "home"), (fixture.away, "away"))
    ]


def _periods(fixture: SimFixture, elapsed: float, minute: int | None) -> list[Any]:
    """The periods so far; the ticking one gives the live minute (facts: `counts_from`,
    `minutes`, `ticking`)."""
    if minute is None:
        return []
    spans = [(1, "1st-half", 0.0, FIRST_HALF_END, 0, 45)]
    spans.append((2, "2nd-half", SECOND_HALF_START, FULL_TIME, 45, 90))
    if fixture.extra_time:
        spans.append((3, "extra-time", BREAK_END, ET_FIRST_END, 90, 105))
        spans.append((3, "extra-time", ET_BREAK_END, ET_SECOND_END, 105, 120))
    if fixture.penalties:
        spans.append((5, "penalties", ET_SECOND_END, PENALTIES_END, 120, 120))
    periods = []
    for order, (type_id, description, begins, ends, counts_from, last) in enumerate(spans, 1):
        if elapsed < begins:
            break
        ticking = elapsed < ends
        periods.append(
            {
                "fixture_id": fixture.fixture_id,
                "type_id": type_id,
                "started": None,
                "ended": None,
                "counts_from": counts_from,
                "ticking": ticking,
                "sort_order": order,
                "description": description,
                "time_added": None,
                "period_length": last - counts_from,
                "minutes": min(minute, last) if ticking else last,
                "seconds": 0,
                "has_timer": ticking,
            }
        )
    return periods


@cache
def _stages() -> dict[int, str]:
    return {f["sportmonksFixtureId"]: f["stage"] for f in load_demo_data()["fixtures"]}


def _stage_name(fixture: SimFixture) -> str:
    return _stages().get(fixture.fixture_id, "Group stage")


def _shootout(fixture: SimFixture, elapsed: float) -> list[Any]:
    """The shoot-out kicks so far (22 miss, 23 goal): they score for nobody's matchScore."""
    if not fixture.penalties or elapsed < ET_SECOND_END:
        return []
    taken = min(2 * SHOOTOUT_KICKS, int((elapsed - ET_SECOND_END) * 2 * SHOOTOUT_KICKS / 10) + 1)
    kicks = []
    for number in range(taken):
        side = fixture.home if number % 2 == 0 else fixture.away
        missed = side is fixture.away and number == 2 * SHOOTOUT_KICKS - 1
        kicks.append(
            {
                "id": fixture.fixture_id * EVENT_ID_SPAN + EVENT_ID_SPAN // 2 + number,
                "fixture_id": fixture.fixture_id,
                "type_id": 22 if missed else 23,
                "participant_id": side.team_id,
                "player_id": side.lineup[number // 2][0],
                "coach_id": None,
                "minute": 120,
                "sort_order": 1_000 + number,
            }
        )
    return kicks


def _lineups(
    fixture: SimFixture, played: list[ScriptedEvent], minute: int | None, details: bool
) -> list[Any]:
    counts: dict[tuple[int, Stat], int] = {}
    for e in played:
        if e.kind == "stat" and e.stat is not None:
            counts[e.player, e.stat] = counts.get((e.player, e.stat), 0) + e.count
        elif e.kind == "goal":
            counts[e.player, Stat.GOALS] = counts.get((e.player, Stat.GOALS), 0) + 1
            if e.assist is not None:
                counts[e.assist, Stat.ASSISTS] = counts.get((e.assist, Stat.ASSISTS), 0) + 1
    entries = []
    for side in (fixture.home, fixture.away):
        for number, (player_id, name, position) in enumerate(side.lineup, start=1):
            starter = number <= side.starters
            lineup_id = fixture.fixture_id * EVENT_ID_SPAN + player_id % EVENT_ID_SPAN
            entry: dict[str, Any] = {
                "id": lineup_id,
                "sport_id": 1,
                "fixture_id": fixture.fixture_id,
                "player_id": player_id,
                "team_id": side.team_id,
                "position_id": POSITION_IDS[position],
                "type_id": 11 if starter else 12,
                "player_name": name,
                "jersey_number": number,
            }
            if details:
                stats = [(DETAIL_IDS[s], v) for (p, s), v in counts.items() if p == player_id]
                if starter and minute is not None:
                    stats.append((MINUTES_PLAYED_TYPE_ID, minute))
                entry["details"] = [
                    {
                        "id": lineup_id * 1_000 + type_id,
                        "fixture_id": fixture.fixture_id,
                        "player_id": player_id,
                        "team_id": side.team_id,
                        "lineup_id": lineup_id,
                        "type_id": type_id,
                        "data": {"value": value},
                    }
                    for type_id, value in sorted(stats)
                ]
            entries.append(entry)
    return entries


def _events(fixture: SimFixture, played: list[ScriptedEvent]) -> list[Any]:
    return [
        {
            # NOTE: stable per fixture and order, so a poll counts each event once by its id.
            "id": fixture.fixture_id * EVENT_ID_SPAN + number,
            "fixture_id": fixture.fixture_id,
            "type_id": EVENT_TYPE_IDS[e.kind],
            "participant_id": _team_of(fixture, e.player).team_id,
            "player_id": e.player,
            "related_player_id": e.assist,
            "coach_id": None,
            "minute": e.minute,
            "extra_minute": None,
            "sort_order": number,
        }
        for number, e in enumerate(played)
        if e.kind in EVENT_TYPE_IDS
    ]


def _schema_violation(fixtures: list[dict[str, Any]]) -> dict[str, Any]:
    """Valid JSON whose envelope breaks the shape: `data` is not a list. (An odd item inside
    `data` is skipped, not a failure: the `odd` fault.)"""
    return {"data": {"fixtures": fixtures}}


class Handler(BaseHTTPRequestHandler):
    simulator: Simulator  # set on the class the server builds

    def log_message(self, format: str, *args: Any) -> None:
        return  # NOTE: quiet; every poll would print a line

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        token = query.get("api_token", [""])[0] or self.headers.get("Authorization", "")
        sim = self.simulator
        if sim.api_token and token != sim.api_token:
            self._send(401, {"message": "Unauthenticated."})
            return
        if not url.path.startswith(API_PREFIX + "/"):
            self._send(404, {"message": "Not found."})
            return
        includes = {i for part in query.get("include", []) for i in part.split(";") if i}
        route = url.path[len(API_PREFIX) + 1 :].strip("/").split("/")
        try:
            data = self._route(route, includes)
            page = None
            if route[0] == "fixtures":
                per_page = int(query.get("per_page", [str(DEFAULT_PER_PAGE)])[0])
                page = (int(query.get("page", ["1"])[0]), min(max(per_page, 1), MAX_PER_PAGE))
                if page[0] < 1:
                    raise ValueError(page)
        except ValueError:
            self._send(400, {"message": "Bad request."})
            return
        if data is None:
            self._send(404, {"message": "Not found."})
            return
        self._answer(data, page)

    def _route(self, route: list[str], includes: set[str]) -> list[Any] | None:
        sim = self.simulator
        if route == ["livescores", "inplay"] or route == ["livescores"]:
            return sim.inplay(includes)
        if len(route) == 4 and route[:2] == ["fixtures", "between"]:
            return sim.between(date.fromisoformat(route[2]), date.fromisoformat(route[3]), includes)
        if len(route) == 3 and route[:2] == ["fixtures", "date"]:
            day = date.fromisoformat(route[2])
            return sim.between(day, day, includes)
        return None

    def _answer(self, data: list[Any], page: tuple[int, int] | None = None) -> None:
        sim = self.simulator
        fault = sim.next_fault()
        if fault == "rate_limited":
            self._send(
                429,
                {
                    "message": "You have reached the rate limit (simulated).",
                    "rate_limit": {
                        "resets_in_seconds": RATE_LIMIT_WAIT_S,
                        "remaining": 0,
                        "requested_entity": "Fixture",
                    },
                },
                {"Retry-After": str(RATE_LIMIT_WAIT_S)},
            )
            return
        if fault == "odd":
            data = [_with_odd_items(f) for f in data]
        if fault == "server_error":
            self._send(500, {"message": "Server error (simulated)."})
            return
        if fault == "timeout":
            time.sleep(self.simulator.timeout_fault_s)
        if fault == "malformed":
            self._send_raw(200, b'{"data": [{"id": 1, "state_id": ')
            return
        body = _schema_violation(data) if fault == "schema" else _envelope(data, page)
        body["rate_limit"] = sim.count_call()
        self._send(200, body)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/_sim/faults":
            self._send(404, {"message": "Not found."})
            return
        try:
            length = min(int(self.headers.get("Content-Length") or 0), 1024)
            body = json.loads(self.rfile.read(length) or b"{}")
            kind, count = body["kind"], int(body.get("count", 1))
            if kind not in FAULT_KINDS or not 1 <= count <= 1000:
                raise ValueError(kind)
        except (ValueError, KeyError, TypeError):
            self._send(400, {"message": f"Send {{kind: one of {', '.join(FAULT_KINDS)}, count}}."})
            return
        self.simulator.inject(kind, count)
        self._send(202, {"queued": count, "kind": kind})

    def _send(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._send_raw(status, json.dumps(body).encode("utf-8"), headers)

    def _send_raw(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _envelope(data: list[Any], page: tuple[int, int] | None) -> dict[str, Any]:
    """The v3 envelope; a fixture list (`page` = (number, per page)) gets one page of it."""
    number, per_page = page or (1, max(len(data), 1))
    start = (number - 1) * per_page
    has_more = page is not None and start + per_page < len(data)
    return {
        "data": data[start : start + per_page],
        "pagination": {
            "count": len(data[start : start + per_page]),
            "per_page": per_page,
            "current_page": number,
            "next_page": f"?page={number + 1}" if has_more else None,
            "has_more": has_more,
        },
        "subscription": [],
        "timezone": "UTC",
    }


def _with_odd_items(fixture: dict[str, Any]) -> dict[str, Any]:
    """The fixture with items real bodies carry and FTL must skip: a card shown to a coach (no
    player), a card of a player missing from the lineups, a detail whose value is an object."""
    odd = dict(fixture)
    base = fixture["id"] * EVENT_ID_SPAN + EVENT_ID_SPAN - 10
    if "events" in odd:
        home = fixture["participants"][0]["id"] if fixture.get("participants") else None
        odd["events"] = [
            *fixture["events"],
            {"id": base, "type_id": 19, "participant_id": home, "player_id": None,
             "coach_id": 455, "minute": 1},
            {"id": base + 1, "type_id": 19, "participant_id": home, "player_id": 999_999_999,
             "coach_id": None, "minute": 1},
        ]  # fmt: skip
    if odd.get("lineups"):
        first = dict(odd["lineups"][0])
        first["details"] = [
            *first.get("details", []),
            {"type_id": 57, "data": {"value": {"total": 3, "goals": 0, "penalties": 0}}},
        ]
        odd["lineups"] = [first, *odd["lineups"][1:]]
    return odd


def make_server(simulator: Simulator, host: str, port: int) -> ThreadingHTTPServer:
    """The HTTP server on host:port (0 picks a free port: read `server.server_address`)."""
    handler = type("SimHandler", (Handler,), {"simulator": simulator})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


@contextmanager
def serve_in_thread(simulator: Simulator, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve on a free loopback port in a thread; yields the base URL, stops on exit."""
    server = make_server(simulator, host, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}{API_PREFIX}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
