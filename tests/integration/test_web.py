"""The web process: health, readiness, and the error envelope for every failure (SPEC §3)."""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import falcon
import falcon.asgi
import msgspec
import pytest
from falcon import testing

from ftl.core.config import Settings
from ftl.store.services import Services
from web.app import create_app
from web.body import MAX_BODY_BYTES, read_body


class EchoBody(msgspec.Struct, omit_defaults=True):
    a: int | None = None
    pad: str | None = None


class Echo:
    """A test-only route that reads a JSON body through the product's reader."""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"received": msgspec.to_builtins(await read_body(req, EchoBody))}


class Broken:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        raise RuntimeError("password=hunter2 leaked from deep inside")


def build(settings: Settings) -> falcon.asgi.App[Any, Any]:
    app = create_app(settings)
    app.add_route("/test/echo", Echo())
    app.add_route("/test/broken", Broken())
    return app


@pytest.fixture
async def client(settings: Settings, market: Services) -> AsyncIterator[testing.ASGIConductor]:
    """The app over the seeded market: /ready needs hot state present."""
    async with testing.ASGIConductor(build(settings)) as conductor:
        yield conductor


def assert_envelope(result: testing.Result, status: int, code: str) -> dict[str, Any]:
    assert result.status_code == status, result.text
    body = result.json
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert "Traceback" not in result.text
    error: dict[str, Any] = body["error"]
    return error


async def test_health_answers_while_the_process_lives(client: testing.ASGIConductor) -> None:
    result = await client.simulate_get("/health")
    assert result.status_code == 200
    assert result.json == {"status": "ok"}


async def test_ready_checks_postgres_redis_scripts_and_policy(
    client: testing.ASGIConductor,
) -> None:
    result = await client.simulate_get("/ready")
    assert result.status_code == 200, result.text
    assert result.json["checks"] == {
        "postgres": "ok",
        "redis": "ok",
        "scripts": "ok",
        "redisPolicy": "ok",
        "hotState": "ok",
    }


async def test_ready_reloads_scripts_redis_forgot(
    client: testing.ASGIConductor, services: Services
) -> None:
    await services.redis.script_flush()
    result = await client.simulate_get("/ready")
    assert result.status_code == 200
    assert await services.scripts.missing() == []


async def test_ready_names_a_wrong_eviction_policy(
    client: testing.ASGIConductor, services: Services
) -> None:
    await services.redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        result = await client.simulate_get("/ready")
    finally:
        await services.redis.config_set("maxmemory-policy", "noeviction")
    error = assert_envelope(result, 503, "unavailable")
    assert error == {
        "code": "unavailable",
        "message": "Not ready: redisPolicy.",
        "details": {"failing": ["redisPolicy"]},
    }


async def test_ready_names_an_unreachable_database(settings: Settings, market: Services) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = dataclasses.replace(
        settings, database_url=f"postgresql+psycopg://ftl@127.0.0.1:{closed_port}/ftl"
    )
    async with testing.ASGIConductor(create_app(unreachable)) as conductor:
        result = await conductor.simulate_get("/ready")
    error = assert_envelope(result, 503, "unavailable")
    # APPSEC: the part is named; the exception (host, port, driver text) is not.
    assert error["details"] == {"failing": ["postgres"]}
    assert str(closed_port) not in result.text and "psycopg" not in result.text.lower()


async def test_unknown_route_is_404_in_the_envelope(client: testing.ASGIConductor) -> None:
    assert_envelope(await client.simulate_get("/api/no-such-thing"), 404, "not_found")


async def test_wrong_method_is_405_with_allow(client: testing.ASGIConductor) -> None:
    result = await client.simulate_delete("/health")
    assert_envelope(result, 405, "method_not_allowed")
    assert "GET" in result.headers["allow"]


async def test_body_over_16_kib_is_413(client: testing.ASGIConductor) -> None:
    body = json.dumps({"pad": "x" * MAX_BODY_BYTES})
    result = await client.simulate_post("/test/echo", body=body, content_type="application/json")
    assert_envelope(result, 413, "payload_too_large")


async def test_body_exactly_16_kib_is_read(client: testing.ASGIConductor) -> None:
    padding = MAX_BODY_BYTES - len(json.dumps({"pad": ""}))
    body = json.dumps({"pad": "x" * padding})
    assert len(body) == MAX_BODY_BYTES
    result = await client.simulate_post("/test/echo", body=body, content_type="application/json")
    assert result.status_code == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_json_is_415(
    client: testing.ASGIConductor, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    result = await client.simulate_post("/test/echo", body='{"a": 1}', headers=headers)
    assert_envelope(result, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body",
    ['{"a": ', "not json", '{"lotSize": NaN}', '{"lotSize": Infinity}', "[1, 2]", '"text"', ""],
)
async def test_invalid_json_is_400(client: testing.ASGIConductor, body: str) -> None:
    result = await client.simulate_post("/test/echo", body=body, content_type="application/json")
    assert_envelope(result, 400, "invalid_json")


async def test_deeply_nested_json_is_400_not_a_crash(client: testing.ASGIConductor) -> None:
    body = "[" * 5_000 + "]" * 5_000
    assert len(body) <= MAX_BODY_BYTES
    result = await client.simulate_post("/test/echo", body=body, content_type="application/json")
    assert result.status_code == 400


async def test_json_with_charset_is_accepted(client: testing.ASGIConductor) -> None:
    result = await client.simulate_post(
        "/test/echo", body='{"a": 1}', content_type="application/json; charset=utf-8"
    )
    assert result.status_code == 200
    assert result.json == {"received": {"a": 1}}


async def test_an_unexpected_error_is_500_without_internals(client: testing.ASGIConductor) -> None:
    result = await client.simulate_get("/test/broken")
    assert_envelope(result, 500, "internal_error")
    assert "hunter2" not in result.text
    assert "RuntimeError" not in result.text
