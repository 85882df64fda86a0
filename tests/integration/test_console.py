"""GET /console and its assets: the right content types, where the ws process is, nothing else
served from the folder, and no console in production."""

from __future__ import annotations

from dataclasses import replace

import pytest
from falcon import testing

from ftl.core.config import Settings
from ftl.store.services import Services
from web.app import create_app


@pytest.mark.parametrize(
    ("path", "content_type", "needle"),
    [
        (
            "/console",
            "text/html; charset=utf-8",
            b'<script type="module" src="/console/console.js">',
        ),
        ("/console/", "text/html; charset=utf-8", b"<title>FTL console</title>"),
        ("/console/console.js", "text/javascript; charset=utf-8", b'from "./msgpack.js"'),
        ("/console/msgpack.js", "text/javascript; charset=utf-8", b"export function decode"),
        ("/console/console.css", "text/css; charset=utf-8", b".connection"),
    ],
)
async def test_the_page_and_its_assets_are_served_with_their_types(
    api: testing.ASGIConductor, path: str, content_type: str, needle: bytes
) -> None:
    result = await api.simulate_get(path)
    assert result.status_code == 200
    assert result.headers["content-type"] == content_type
    assert result.headers["x-content-type-options"] == "nosniff"
    assert needle in result.content


async def test_the_page_may_only_reach_the_api_and_the_ws_process(
    api: testing.ASGIConductor, settings: Settings
) -> None:
    policy = (await api.simulate_get("/console")).headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert f"connect-src 'self' ws://falconframework.org:{settings.ws_port};" in policy


async def test_config_says_where_the_ws_process_is(
    api: testing.ASGIConductor, settings: Settings
) -> None:
    result = await api.simulate_get("/console/config.json", host="127.0.0.1")
    assert result.json == {"wsUrl": f"ws://127.0.0.1:{settings.ws_port}/ws/prices"}
    assert result.headers["cache-control"] == "no-store"
    for host, ws_host in (("localhost", "localhost"), ("::1", "[::1]")):
        result = await api.simulate_get("/console/config.json", host=host)
        assert result.json == {"wsUrl": f"ws://{ws_host}:{settings.ws_port}/ws/prices"}


async def test_ws_public_url_overrides_the_guess(settings: Settings, market: Services) -> None:
    app = create_app(replace(settings, ws_public_url="wss://prices.example.com/ws/prices"))
    async with testing.ASGIConductor(app) as conductor:
        result = await conductor.simulate_get("/console/config.json")
        page = await conductor.simulate_get("/console")
    assert result.json == {"wsUrl": "wss://prices.example.com/ws/prices"}
    assert "connect-src 'self' wss://prices.example.com;" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    "path", ["/console/index.html", "/console/nothing.js", "/console/..%2Fapp.py", "/console/a/b"]
)
async def test_only_the_console_files_are_served(api: testing.ASGIConductor, path: str) -> None:
    result = await api.simulate_get(path)
    assert result.status_code == 404
    assert result.json["error"]["code"] == "not_found"


async def test_production_has_no_console(settings: Settings, market: Services) -> None:
    app = create_app(replace(settings, env="production"))
    async with testing.ASGIConductor(app) as conductor:
        for path in ("/console", "/console/console.js", "/console/config.json"):
            assert (await conductor.simulate_get(path)).status_code == 404
