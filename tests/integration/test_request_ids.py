"""A request id follows the work it starts (docs/decisions/0061): on the web process's log lines,
and on the worker's lines while it processes a message the request enqueued (real Redis broker,
real Dramatiq worker)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dramatiq import Worker
from falcon import testing

from ftl.core.config import Settings
from ftl.ops.dev_google import DevGoogleIssuer
from ftl.store.services import Services
from web.app import create_app
from workers.broker import REQUEST_ID_OPTION, broker
from workers.email import EMAIL_QUEUE

WORKER_WAIT_S = 10


def lines(log: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


@pytest.fixture
async def client(
    settings: Settings, services: Services, districts: None, issuer: DevGoogleIssuer
) -> AsyncIterator[testing.ASGIConductor]:
    app_settings = dataclasses.replace(settings, google_jwks_url=issuer.jwks_url, smtp_url="")
    async with testing.ASGIConductor(create_app(app_settings)) as conductor:
        yield conductor


async def test_the_web_log_line_of_a_request_carries_its_id(
    client: testing.ASGIConductor, json_log: io.StringIO
) -> None:
    result = await client.simulate_get("/health", headers={"X-Request-Id": "probe-1"})
    assert result.status_code == 200
    access = [line for line in lines(json_log) if line["logger"] == "web.access"]
    assert [(line["request_id"], line["message"].split()[:3]) for line in access] == [
        ("probe-1", ["GET", "/health", "200"])
    ]


async def test_the_worker_logs_under_the_id_of_the_request_that_enqueued_its_message(
    client: testing.ASGIConductor, issuer: DevGoogleIssuer, json_log: io.StringIO
) -> None:
    nonce = uuid.uuid4().hex
    token = issuer.mint("trace@example.com", nonce=nonce)
    started = await client.simulate_post(
        "/api/auth/google",
        json={"idToken": token, "nonce": nonce},
        headers={"X-Request-Id": "signup-trace-1"},
    )
    assert started.status_code == 422, started.text  # a new user: the code email is enqueued
    queued = broker.client.hvals(f"{broker.namespace}:{EMAIL_QUEUE}.msgs")
    assert [json.loads(m)["options"][REQUEST_ID_OPTION] for m in queued] == ["signup-trace-1"]

    worker = Worker(broker, worker_threads=1, queues={EMAIL_QUEUE})
    worker.start()
    try:
        deadline = time.monotonic() + WORKER_WAIT_S
        sent: list[dict[str, Any]] = []
        while not sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            sent = [line for line in lines(json_log) if "email not sent" in line["message"]]
    finally:
        worker.stop()
    assert [(line["logger"], line.get("request_id")) for line in sent] == [
        ("ftl.accounts.email", "signup-trace-1")
    ]
