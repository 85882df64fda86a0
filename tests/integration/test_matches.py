"""GET /api/matches and GET /api/matches/{id} (SPEC §3.2): fixtures with status, live minute and
score, and their instruments with the fields of §1.2."""

from __future__ import annotations

import uuid

from falcon import testing

from ftl.market.matches import apply_livescores
from ftl.ops.seed import load_demo_data
from ftl.sportmonks.breaker import set_live_degraded
from ftl.sportmonks.payload import FeedFixture
from ftl.store.services import Services

INSTRUMENT_FIELDS = {
    "id", "idx", "sportmonksPlayerId", "name", "team", "position", "formIndex", "basePrice",
    "liveBasePrice", "price", "kMod", "netLots", "isActive", "frozen", "degraded",
}  # fmt: skip


def live(fixture_id: int, minute: int, home: int, away: int, state_id: int = 22) -> FeedFixture:
    return FeedFixture(fixture_id, state_id, 1, 2, home, away, minute, ())


async def test_matches_lists_every_fixture_by_kickoff_with_its_instruments(
    api: testing.ASGIConductor,
) -> None:
    result = await api.simulate_get("/api/matches")
    assert result.status_code == 200, result.text
    found = result.json["matches"]
    demo = load_demo_data()
    assert [m["sportmonksFixtureId"] for m in found] == [
        f["sportmonksFixtureId"] for f in sorted(demo["fixtures"], key=lambda f: f["kickoffAt"])
    ]
    first = found[0]
    assert (first["homeTeam"], first["awayTeam"], first["status"]) == ("MEX", "POR", "scheduled")
    assert first["kickoffAt"] == "2026-06-11T19:00:00Z"
    assert (first["minute"], first["homeScore"], first["awayScore"]) == (None, 0, 0)
    squads = {t["code"]: len(t["players"]) for t in demo["teams"]}
    assert len(first["instruments"]) == squads["MEX"] + squads["POR"]
    assert {i["team"] for i in first["instruments"]} == {"MEX", "POR"}
    assert all(set(i) == INSTRUMENT_FIELDS for i in first["instruments"])
    one = first["instruments"][0]
    assert one["price"] == one["liveBasePrice"] == one["basePrice"], "no trades yet"
    assert one["kMod"] == 0.05 and one["netLots"] == 0


async def test_a_live_match_shows_minute_score_and_degraded_players(
    api: testing.ASGIConductor, services: Services
) -> None:
    await apply_livescores(services.engine, [live(19000003, 63, 2, 1)])
    listed = (await api.simulate_get("/api/matches", params={"status": "live"})).json["matches"]
    assert [m["sportmonksFixtureId"] for m in listed] == [19000003]
    match = listed[0]
    assert (match["status"], match["minute"], match["homeScore"], match["awayScore"]) == (
        "live",
        63,
        2,
        1,
    )
    await set_live_degraded(services.redis, services.engine, services.scripts, degraded=True)
    one = await api.simulate_get(f"/api/matches/{match['id']}")
    assert one.status_code == 200
    assert {i["degraded"] for i in one.json["instruments"]} == {True}
    scheduled = (await api.simulate_get("/api/matches", params={"status": "scheduled"})).json
    mex_por = next(m for m in scheduled["matches"] if m["sportmonksFixtureId"] == 19000001)
    assert {i["degraded"] for i in mex_por["instruments"]} == {False}, "no live player there"


async def test_a_finished_match(api: testing.ASGIConductor, services: Services) -> None:
    await apply_livescores(services.engine, [live(19000001, 90, 0, 3, state_id=5)])
    [match] = (await api.simulate_get("/api/matches", params={"status": "finished"})).json[
        "matches"
    ]
    assert (match["homeScore"], match["awayScore"], match["minute"]) == (0, 3, 90)
    assert match["fullTimeAt"] is not None


async def test_a_bad_status_is_400_and_an_unknown_match_404(api: testing.ASGIConductor) -> None:
    bad = await api.simulate_get("/api/matches", params={"status": "halftime"})
    assert bad.status_code == 400
    assert bad.json["error"]["code"] == "validation_error"
    assert bad.json["error"]["details"] == {"field": "status"}
    missing = await api.simulate_get(f"/api/matches/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    not_an_id = await api.simulate_get("/api/matches/42")
    assert not_an_id.status_code == 404 and not_an_id.json["error"]["code"] == "not_found"
