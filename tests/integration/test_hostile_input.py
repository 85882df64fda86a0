"""Hostile input (issue #8): oversized and deeply nested JSON, wrong media types, Unicode tricks in
names, numbers that are not numbers, other users' ids, malformed ids and request floods. Each
gets the documented refusal with a stable code, never a 500, and changes nothing in either store.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import redis
from falcon import testing

from ftl.core.config import Settings
from ftl.core.json_input import MAX_DEPTH
from ftl.store.ratelimit import IP_LIMIT_PER_MIN
from ftl.store.services import Services
from tests.integration.api_helpers import login
from tests.integration.openapi_helpers import assert_documented, checked
from tests.integration.test_trading_api import stores
from web.app import create_app
from web.body import MAX_BODY_BYTES
from web.openapi import document

Headers = dict[str, str]


@pytest.fixture
def raw_redis(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


@pytest.fixture
async def people(api: testing.ASGIConductor, pg_admin: psycopg.Connection) -> dict[str, Any]:
    """Two traders (one an admin, so admin routes get past the role check), an instrument, and
    an open position of each."""
    alice_id, alice = await login(api, "Alice")
    _, bob = await login(api, "Bob")
    pg_admin.execute("UPDATE users SET role = 'admin' WHERE id = %s", (alice_id,))
    instrument = (await api.simulate_get("/api/instruments")).json["instruments"][0]
    positions = {}
    for name, headers in (("alice", alice), ("bob", bob)):
        opened = await api.simulate_post(
            "/api/positions/open",
            headers=headers,
            json={
                "instrumentId": instrument["id"],
                "direction": "long",
                "lotSize": 1,
                "clientRequestId": f"{name}-1",
                "clientPrice": instrument["price"],
            },
        )
        assert opened.status_code == 201, opened.text
        positions[name] = opened.json["position"]["id"]
    return {
        "alice": alice,
        "alice_id": alice_id,
        "bob": bob,
        "instrument": instrument,
        "positions": positions,
    }


def body_operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation that takes a JSON body, with ids filled in later."""
    found = []
    for path, operations in document(False)["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                found.append((method.upper(), path))
    return found


def concrete(path: str, people: dict[str, Any]) -> str:
    return (
        path.replace("{position_id}", people["positions"]["alice"])
        .replace("{name}", "demoBanner")
        .replace("{instrument_id}", people["instrument"]["id"])
    )


def assert_refused(result: testing.Result, method: str, path: str, status: int, code: str) -> None:
    assert result.status_code == status, f"{method} {path}: {result.status_code} {result.text}"
    assert result.json["error"]["code"] == code, result.text
    assert_documented(result, method, path)


# --- size, nesting, media type --------------------------------------------------------------


async def test_every_body_route_refuses_big_bodies_deep_nesting_and_other_media_types(
    api: testing.ASGIConductor,
    people: dict[str, Any],
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
) -> None:
    too_big = json.dumps({"label": "x" * MAX_BODY_BYTES}).encode()
    deep = b'{"a":' + b"[" * 8_000 + b"]" * 8_000 + b"}"
    assert len(deep) <= MAX_BODY_BYTES
    overlong_utf8 = b'{"label":"\xc0\xaf"}'
    cases: list[tuple[bytes, str, int, str]] = [
        (too_big, "application/json", 413, "payload_too_large"),
        (deep, "application/json", 400, "invalid_json"),
        (b"[" * 900 + b"]" * 900, "application/json", 400, "invalid_json"),
        (overlong_utf8, "application/json", 400, "invalid_json"),
        (b"NaN", "application/json", 400, "invalid_json"),
        (b'{"a": Infinity}', "application/json", 400, "invalid_json"),
        (b"{}", "text/plain", 415, "unsupported_media_type"),
        (b"a=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"{}", "application/json-patch+json", 415, "unsupported_media_type"),
    ]
    operations = body_operations()
    assert len(operations) == 15
    before = stores(pg_admin, raw_redis)
    for method, path in operations:
        url, headers = concrete(path, people), people["alice"]
        for raw, media_type, status, code in cases:
            result = await api.simulate_request(
                method, url, headers={**headers, "Content-Type": media_type}, body=raw
            )
            assert_refused(result, method, url, status, code)
    assert stores(pg_admin, raw_redis) == before


# --- Unicode in names -----------------------------------------------------------------------

REFUSED_NAMES = {
    "right-to-left override": "\u202eevilname",
    "zero-width space": "Asha\u200bMenon",
    "byte order mark": "\ufeffAsha",
    "NUL": "Asha\u0000",
    "bell": "Asha\u0007",
    "combining mark first": "\u0301Asha",
    "Zalgo": "A" + "\u0301\u0302\u0303\u0304\u0305\u0306",
    "private use": "Asha\ue000",
    "unassigned": "Asha\U000e0080",
    "zero-width joiner at the end": "Asha\u200d",
    "blank": " \u3000\t",
    "too long": "A" * 81,
}
# raw JSON text of the value, for what Python cannot hold in a str we send
LONE_SURROGATE = '"Asha\\ud800"'

STORED_NAMES = {
    "  Asha   Menon  ": "Asha Menon",
    "Asha\u00a0Menon": "Asha Menon",
    "Jose\u0301": "José",
    "അനിൽ": "അനിൽ",
    "ന\u0d4d\u200dന": "ന\u0d4d\u200dന",
}


async def test_tricky_display_names_and_invite_labels_are_refused(
    api: testing.ASGIConductor,
    people: dict[str, Any],
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
) -> None:
    before = stores(pg_admin, raw_redis)
    for name, text in REFUSED_NAMES.items():
        dev = await api.simulate_post("/api/auth/dev", json={"displayName": text})
        assert_refused(dev, "POST", "/api/auth/dev", 400, "validation_error")
        assert dev.json["error"]["details"] == {"field": "displayName"}, name
        label = await api.simulate_post(
            "/api/referrals/invites", headers=people["alice"], json={"label": text}
        )
        assert_refused(label, "POST", "/api/referrals/invites", 400, "validation_error")
        batch = await api.simulate_post("/api/auth/dev/batch", json={"count": 1, "prefix": text})
        assert_refused(batch, "POST", "/api/auth/dev/batch", 400, "validation_error")
    assert stores(pg_admin, raw_redis) == before


async def test_a_lone_surrogate_is_refused(
    api: testing.ASGIConductor,
    people: dict[str, Any],
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
) -> None:
    before = stores(pg_admin, raw_redis)
    for path, field, headers in (
        ("/api/auth/dev", "displayName", {}),
        ("/api/referrals/invites", "label", people["alice"]),
    ):
        result = await api.simulate_post(
            path,
            headers={**headers, "Content-Type": "application/json"},
            body=f'{{"{field}": {LONE_SURROGATE}}}'.encode(),
        )
        assert_refused(result, "POST", path, 400, "validation_error")
        assert result.json["error"]["details"] == {"field": field}
    assert stores(pg_admin, raw_redis) == before


@pytest.mark.parametrize("sent", list(STORED_NAMES))
async def test_names_are_stored_normalised(
    api: testing.ASGIConductor, people: dict[str, Any], pg_admin: psycopg.Connection, sent: str
) -> None:
    signed_in = await checked(api, "POST", "/api/auth/dev", json={"displayName": sent})
    assert signed_in.json["user"]["displayName"] == STORED_NAMES[sent]
    invite = await checked(
        api, "POST", "/api/referrals/invites", headers=people["alice"], json={"label": sent}
    )
    assert invite.json["label"] == STORED_NAMES[sent]
    row = pg_admin.execute(
        "SELECT label FROM referral_invites WHERE id = %s", (invite.json["id"],)
    ).fetchone()
    assert row == (STORED_NAMES[sent],)


def test_registration_names_follow_the_same_rules() -> None:
    from ftl.accounts.registration import Profile
    from ftl.core.errors import InvalidInput

    base = {"firstName": "Asha", "age": 30, "phone": "9876543210", "districtId": 1}
    for text in REFUSED_NAMES.values():
        for field in ("firstName", "lastName"):
            with pytest.raises(InvalidInput) as refused:
                Profile.parse({**base, field: text})
            assert refused.value.details == {"field": field}
    for sent, stored in STORED_NAMES.items():
        profile = Profile.parse({**base, "firstName": sent, "lastName": sent})
        assert (profile.first_name, profile.last_name) == (stored, stored)


# --- numbers --------------------------------------------------------------------------------

NOT_NUMBERS: dict[str, str] = {
    "negative": "-1",
    "zero": "0",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "overflows to infinity": "1e309",
    "underflows to zero": "1e-400",
    "huge integer": "1" + "0" * 400,
    "too many digits to parse": "9" * 5_000,
    "true": "true",
    "a string": '"1"',
    "an object": "{}",
}
ZEROS = ("0", "1e-400")
OPEN_NUMBERS = ("lotSize", "clientPrice", "slippageTolerancePct", "stopLoss", "takeProfit")


def _with_raw(body: dict[str, Any], field: str, raw: str) -> bytes:
    """The body as JSON text with `field` set to `raw` JSON text (NaN and friends included)."""
    marker = "__raw__"
    return json.dumps({**body, field: marker}).replace(f'"{marker}"', raw).encode()


async def test_numbers_that_are_not_usable_are_refused_everywhere(
    api: testing.ASGIConductor,
    people: dict[str, Any],
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
) -> None:
    alice = people["alice"]
    json_headers = {**alice, "Content-Type": "application/json"}
    order = {
        "instrumentId": people["instrument"]["id"],
        "direction": "long",
        "lotSize": 1,
        "clientRequestId": "not-a-number",
        "clientPrice": people["instrument"]["price"],
    }
    position = f"/api/positions/{people['positions']['alice']}"
    history = f"/api/instruments/{people['instrument']['id']}/price-history"
    before = stores(pg_admin, raw_redis)
    for raw in NOT_NUMBERS.values():
        # NOTE: a slippage tolerance of 0 is a valid choice (no slippage at all).
        fields = [f for f in OPEN_NUMBERS if not (f == "slippageTolerancePct" and raw in ZEROS)]
        cases = [("POST", "/api/positions/open", order, field) for field in fields]
        cases += [("PATCH", position, {}, "stopLoss"), ("PATCH", position, {}, "takeProfit")]
        cases += [("POST", "/api/auth/dev/batch", {}, "count")]
        for method, path, body, field in cases:
            sent = _with_raw(body, field, raw)
            result = await api.simulate_request(method, path, headers=json_headers, body=sent)
            where = f"{method} {path} {field}={raw[:20]}"
            assert result.status_code == 400, f"{where}: {result.text}"
            assert result.json["error"]["code"] in ("validation_error", "invalid_json"), where
            assert_documented(result, method, path)
        for path, param in (
            ("/api/leaderboard", "limit"),
            ("/api/leaderboard", "offset"),
            ("/api/positions", "limit"),
            ("/api/trades", "limit"),
            (history, "limit"),
        ):
            if raw == "0" and param == "offset":
                continue  # NOTE: offset 0 is the first page
            result = await api.simulate_get(path, headers=alice, params={param: raw})
            assert_refused(result, "GET", path, 400, "validation_error")
    assert stores(pg_admin, raw_redis) == before


@pytest.mark.parametrize("value", ["²", "١٢", "-0", "+5", " 5", "0x10", "1_000", "5\u0000"])
async def test_number_parameters_take_ascii_digits_only(
    api: testing.ASGIConductor, people: dict[str, Any], value: str
) -> None:
    for path in ("/api/leaderboard", "/api/positions", "/api/trades"):
        result = await api.simulate_get(path, headers=people["alice"], params={"limit": value})
        assert_refused(result, "GET", path, 400, "validation_error")


@pytest.mark.parametrize("value", ["\u0000", "a\u0000b", "\u001b[31m", "\x7f"])
async def test_control_characters_in_query_parameters_are_refused(
    api: testing.ASGIConductor, people: dict[str, Any], value: str
) -> None:
    for path, param in (
        ("/api/instruments", "team"),
        ("/api/public/referral/validate", "code"),
        ("/api/positions", "cursor"),
        ("/api/matches", "status"),
    ):
        result = await api.simulate_get(path, headers=people["alice"], params={param: value})
        assert_refused(result, "GET", path, 400, "validation_error")
        assert result.json["error"]["details"] == {"field": param}


# --- ids ------------------------------------------------------------------------------------


async def test_another_users_position_is_404_on_every_route_and_untouched(
    api: testing.ASGIConductor,
    people: dict[str, Any],
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
) -> None:
    bobs = people["positions"]["bob"]
    nobodys = str(uuid.uuid4())
    before = stores(pg_admin, raw_redis)
    for position_id in (bobs, nobodys):
        path = f"/api/positions/{position_id}"
        for method, kwargs in (
            ("GET", {}),
            ("PATCH", {"json": {"stopLoss": None}}),
            ("DELETE", {"params": {"clientRequestId": "steal-1"}}),
        ):
            # APPSEC: alice is an admin, and still cannot see or touch bob's position.
            result = await api.simulate_request(method, path, headers=people["alice"], **kwargs)
            assert isinstance(result, testing.Result)
            assert_refused(result, method, path, 404, "not_found")
    assert stores(pg_admin, raw_redis) == before


@pytest.mark.parametrize(
    "bad", ["nope", "1234", "00000000-0000-0000-0000-00000000000g", "%00", "..", "😀"]
)
async def test_malformed_ids_are_404_in_paths_and_400_in_bodies_and_queries(
    api: testing.ASGIConductor,
    people: dict[str, Any],
    pg_admin: psycopg.Connection,
    raw_redis: redis.Redis,
    bad: str,
) -> None:
    alice = people["alice"]
    before = stores(pg_admin, raw_redis)
    for method in ("GET", "PATCH", "DELETE"):
        path = f"/api/positions/{bad}"
        result = await api.simulate_request(method, path, headers=alice, json={})
        assert result.status_code == 404, result.text
        assert result.json["error"]["code"] == "not_found"
    for path in (f"/api/instruments/{bad}", f"/api/matches/{bad}"):
        result = await api.simulate_get(path)
        assert result.status_code == 404, result.text
    opened = await api.simulate_post(
        "/api/positions/open",
        headers=alice,
        json={
            "instrumentId": bad,
            "direction": "long",
            "lotSize": 1,
            "clientRequestId": "bad-id",
            "clientPrice": 100,
        },
    )
    assert_refused(opened, "POST", "/api/positions/open", 400, "validation_error")
    replay = await api.simulate_post("/api/admin/replay", headers=alice, json={"userId": bad})
    assert_refused(replay, "POST", "/api/admin/replay", 400, "validation_error")
    listed = await api.simulate_get("/api/instruments", params={"fixtureId": bad})
    assert listed.status_code == 400, listed.text
    assert stores(pg_admin, raw_redis) == before


# --- floods ---------------------------------------------------------------------------------


@pytest.fixture
async def limited(settings: Settings, market: Services) -> AsyncIterator[testing.ASGIConductor]:
    on = dataclasses.replace(settings, disable_rate_limit=False)
    async with testing.ASGIConductor(create_app(on)) as conductor:
        yield conductor


async def test_a_flood_of_trades_is_cut_at_the_limit_and_refused_trades_change_nothing(
    limited: testing.ASGIConductor, pg_admin: psycopg.Connection, raw_redis: redis.Redis
) -> None:
    _, trader = await login(limited, "Flooder")
    instrument = (await limited.simulate_get("/api/instruments")).json["instruments"][0]
    answered = []
    for n in range(IP_LIMIT_PER_MIN + 20):
        answered.append(
            await limited.simulate_post(
                "/api/positions/open",
                headers=trader,
                json={
                    "instrumentId": instrument["id"],
                    "direction": "long",
                    "lotSize": 0.01,
                    "clientRequestId": f"flood-{n}",
                    "clientPrice": instrument["price"],
                    "slippageTolerancePct": 0.05,
                },
            )
        )
    statuses = [result.status_code for result in answered]
    refused = [result for result in answered if result.status_code == 429]
    sent = len(answered) + 2  # NOTE: the login and the listing count against the limit too
    assert len(refused) == sent - IP_LIMIT_PER_MIN, statuses
    assert set(statuses) <= {201, 409, 429}
    for result in refused:
        assert_documented(result, "POST", "/api/positions/open")
        assert 1 <= int(result.headers["retry-after"]) <= 60
    before = stores(pg_admin, raw_redis)
    again = await limited.simulate_get("/api/portfolio", headers=trader)
    assert again.status_code == 429
    after = stores(pg_admin, raw_redis)
    # NOTE: only the rate-limit counter itself moves on a refused request.
    assert {k: v for k, v in after[0].items() if b"rate" not in k} == {
        k: v for k, v in before[0].items() if b"rate" not in k
    }
    assert after[1] == before[1]


# --- the 500s of issue 17, each refused at its root -----------------------------------------


async def test_cursors_not_ours_are_400_on_both_lists(
    api: testing.ASGIConductor, people: dict[str, Any]
) -> None:
    kind_where_the_id_belongs = base64.urlsafe_b64encode(b"2024-01-01T00:00:00+00:00|open|open")
    for path, cursor in (
        ("/api/positions", "MjAyNC0wMS0wMVQwMDowMDowMCswMDowMHx4"),
        ("/api/trades", kind_where_the_id_belongs.decode().rstrip("=")),
        ("/api/positions", ""),
        ("/api/trades", ""),
    ):
        result = await api.simulate_get(path, headers=people["alice"], params={"cursor": cursor})
        assert_refused(result, "GET", path, 400, "validation_error")
        assert result.json["error"]["details"] == {"field": "cursor"}


async def test_a_lone_surrogate_nonce_is_refused_before_google_is_asked(
    api: testing.ASGIConductor,
) -> None:
    result = await api.simulate_post(
        "/api/auth/google",
        headers={"Content-Type": "application/json"},
        body=b'{"idToken": "x.y.z", "nonce": "\\ud800"}',
    )
    assert_refused(result, "POST", "/api/auth/google", 400, "validation_error")
    assert result.json["error"]["details"] == {"field": "nonce"}


async def test_json_nested_past_the_limit_is_refused(
    api: testing.ASGIConductor, people: dict[str, Any]
) -> None:
    too_deep = b'{"label":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    result = await api.simulate_post(
        "/api/referrals/invites",
        headers={**people["alice"], "Content-Type": "application/json"},
        body=too_deep,
    )
    assert_refused(result, "POST", "/api/referrals/invites", 400, "invalid_json")


# --- the document states the rules, and the server keeps to the document --------------------


def parameter_schema(path: str, name: str) -> dict[str, Any]:
    operation = document(False)["paths"][path]["get"]
    found: dict[str, Any] = next(p["schema"] for p in operation["parameters"] if p["name"] == name)
    return found


async def test_list_limits_are_1_to_100_as_documented(
    api: testing.ASGIConductor, people: dict[str, Any]
) -> None:
    for path in ("/api/positions", "/api/trades", "/api/leaderboard"):
        assert parameter_schema(path, "limit")["maximum"] == 100
        at_most = await api.simulate_get(path, headers=people["alice"], params={"limit": "100"})
        assert at_most.status_code == 200, at_most.text
        over = await api.simulate_get(path, headers=people["alice"], params={"limit": "101"})
        assert_refused(over, "GET", path, 400, "validation_error")


async def test_a_district_without_the_district_scope_is_refused(
    api: testing.ASGIConductor,
) -> None:
    for params in ({"districtId": "7"}, {"scope": "overall", "districtId": "7"}):
        result = await api.simulate_get("/api/leaderboard", params=params)
        assert_refused(result, "GET", "/api/leaderboard", 400, "validation_error")
        assert result.json["error"]["details"] == {"field": "districtId"}
    district = await api.simulate_get(
        "/api/leaderboard", params={"scope": "district", "districtId": "7"}
    )
    assert district.status_code == 200, district.text


async def test_the_documented_edges_are_accepted(
    api: testing.ASGIConductor, people: dict[str, Any]
) -> None:
    offset = parameter_schema("/api/leaderboard", "offset")["maximum"]
    farthest = await api.simulate_get("/api/leaderboard", params={"offset": str(offset)})
    assert farthest.status_code == 200, farthest.text
    beyond = await api.simulate_get("/api/leaderboard", params={"offset": str(offset + 1)})
    assert_refused(beyond, "GET", "/api/leaderboard", 400, "validation_error")
    instrument = people["instrument"]
    # A tolerance finer than a millionth is within 0 to 0.05, so it is taken (rounded down).
    opened = await api.simulate_post(
        "/api/positions/open",
        headers=people["alice"],
        json={
            "instrumentId": instrument["id"],
            "direction": "short",
            "lotSize": 1,
            "clientRequestId": "fine-tolerance",
            "clientPrice": instrument["price"],
            "slippageTolerancePct": 0.0100005,
        },
    )
    assert opened.status_code == 201, opened.text
    doc = document(False)
    google = doc["paths"]["/api/auth/google"]["post"]["requestBody"]
    name = google["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    nonce = doc["components"]["schemas"][name]["properties"]["nonce"]
    short = await api.simulate_post(
        "/api/auth/google", json={"idToken": "x.y.z", "nonce": "n" * (nonce["minLength"] - 1)}
    )
    assert_refused(short, "POST", "/api/auth/google", 400, "validation_error")
    assert short.json["error"]["details"] == {"field": "nonce"}


async def test_json_schema_integers_and_nulls_are_read_as_the_document_reads_them(
    api: testing.ASGIConductor, people: dict[str, Any]
) -> None:
    # JSON Schema counts 1.0 as an integer, so the server does too.
    batch = await api.simulate_post("/api/auth/dev/batch", json={"count": 1.0})
    assert batch.status_code == 200, batch.text
    # An optional field is absent or of its type; null is neither.
    flag = await api.simulate_put(
        "/api/admin/flags/demoBanner",
        headers=people["alice"],
        json={"enabled": True, "isPublic": None},
    )
    assert_refused(flag, "PUT", "/api/admin/flags/demoBanner", 400, "validation_error")
    logout = await api.simulate_post("/api/auth/logout", json={"refreshToken": None})
    assert_refused(logout, "POST", "/api/auth/logout", 400, "validation_error")
