"""The email outbox and its Dramatiq actor (SPEC §5.5)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from string import Template

import psycopg
import pytest
from dramatiq import Worker

from ftl.accounts.email import MAX_ATTEMPTS, TEMPLATES, deliver, enqueue, render
from ftl.core.config import Settings
from ftl.store.services import Services
from tests.e2e.conftest import free_port
from workers.broker import broker
from workers.email import EMAIL_QUEUE, send_email


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_has_text_and_html_with_escaped_values(template: str) -> None:
    source = TEMPLATES[template]
    fields = {
        name
        for part in (source.subject, source.text, source.html)
        for name in Template(part).get_identifiers()
    }
    rendered = render(template, {name: "<b>x</b>" for name in fields})
    assert rendered.subject and rendered.text and rendered.html
    assert "<b>x</b>" not in rendered.html  # values are escaped in HTML
    assert "&lt;b&gt;x&lt;/b&gt;" in rendered.html or not fields
    assert "$" not in rendered.text + rendered.html


def test_a_missing_context_field_fails_at_enqueue_time() -> None:
    with pytest.raises(KeyError):
        render("welcome", {"firstName": "A"})


async def test_the_actor_sends_through_the_no_op_sender_on_a_real_worker(
    settings: Settings, services: Services, pg_admin: psycopg.Connection
) -> None:
    assert settings.smtp_url == ""
    async with services.engine.begin() as conn:
        outbox_id = await enqueue(
            conn,
            to_address="a@example.com",
            template="registration_code",
            context={"code": "654321", "givenName": "A"},
        )
    send_email.send(str(outbox_id))
    configured = list(broker.middleware)
    worker = Worker(broker, worker_threads=1, queues={EMAIL_QUEUE})
    worker.start()
    try:
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline:
            row = pg_admin.execute(
                "SELECT status, context FROM email_outbox WHERE id = %s", (outbox_id,)
            ).fetchone()
            assert row is not None
            if row[0] == "sent":
                status = row
                break
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        # NOTE: Dramatiq leaves the worker's own middleware on the broker after stop; put the
        # broker back as configured for the tests that inspect it.
        broker.middleware[:] = configured
    assert status is not None and status[0] == "sent"
    assert "code" not in status[1]


async def test_an_smtp_failure_is_recorded_and_retried_until_it_fails(
    settings: Settings, services: Services, pg_admin: psycopg.Connection
) -> None:
    down = dataclasses.replace(settings, smtp_url=f"smtp://127.0.0.1:{free_port()}")
    async with services.engine.begin() as conn:
        outbox_id = await enqueue(
            conn,
            to_address="b@example.com",
            template="registration_code",
            context={"code": "111111", "givenName": "B"},
        )
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with pytest.raises(OSError):
            await deliver(services.engine, down, outbox_id)
        row = pg_admin.execute(
            "SELECT status, attempts, last_error FROM email_outbox WHERE id = %s", (outbox_id,)
        ).fetchone()
        assert row is not None and row[1] == attempt and row[2]
        assert row[0] == ("failed" if attempt == MAX_ATTEMPTS else "pending")
    assert await deliver(services.engine, down, outbox_id) is None  # failed rows stay failed
    assert await deliver(services.engine, settings, uuid.uuid4()) is None
