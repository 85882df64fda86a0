"""The margin outbox: the events evaluations wrote to the `margin_outbox` stream become
`margin_events` rows in Postgres, each once, with the washout email (SPEC §5.5) in the same
transaction."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ftl.accounts import email
from ftl.core.money import from_cents
from ftl.store import keys
from ftl.store.db.models import CfdPosition, Instrument, MarginEvent, MarginEventKind, User
from ftl.store.services import Services

OUTBOX_BATCH_EVENTS = 500
WASHOUT_TEMPLATE = "washout"  # of ftl/accounts/email.py TEMPLATES


def _event_row(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": UUID(event["userId"]),
        "kind": event["kind"],
        "instrument_id": UUID(event["instrumentId"]),
        "seq": int(event["seq"]),
        "position_id": UUID(event["positionId"]) if "positionId" in event else None,
        "price": from_cents(int(event["priceCents"])),
        "equity": from_cents(int(event["equityCents"])),
        "margin_level": Decimal(int(event["levelBasis"])) / 100,
    }


async def drain_events(services: Services) -> list[UUID]:
    """Write the pending margin events to `margin_events`, each once, with the washout email in
    the same transaction; the ids of the email outbox rows to send.

    NOTE: a washout's row references its position, so an event whose position the flusher has
    not written yet stays in the stream for the next drain.
    """
    redis = services.redis
    entries: list[tuple[str, dict[str, str]]] = await redis.xrange(  # type: ignore[assignment]
        keys.MARGIN_OUTBOX, count=OUTBOX_BATCH_EVENTS
    )
    if not entries:
        return []
    events = [(entry_id, json.loads(fields["event"])) for entry_id, fields in entries]
    wanted = {UUID(e["positionId"]) for _, e in events if "positionId" in e}
    emails: list[UUID] = []
    async with services.engine.begin() as conn:
        present = set(
            (await conn.execute(select(CfdPosition.id).where(CfdPosition.id.in_(wanted)))).scalars()
        )
        ready = [
            (i, e) for i, e in events if "positionId" not in e or UUID(e["positionId"]) in present
        ]
        for _, event in ready:
            inserted = (
                await conn.execute(
                    insert(MarginEvent)
                    .values(_event_row(event))
                    .on_conflict_do_nothing()
                    .returning(MarginEvent.id)
                )
            ).scalar_one_or_none()
            if inserted is not None and event["kind"] == MarginEventKind.washout.value:
                outbox_id = await _washout_email(conn, event)
                if outbox_id is not None:
                    emails.append(outbox_id)
    if ready:
        await redis.xdel(keys.MARGIN_OUTBOX, *(entry_id for entry_id, _ in ready))
    return emails


async def _washout_email(conn: AsyncConnection, event: dict[str, Any]) -> UUID | None:
    """The washout notice (SPEC §5.5) for a user with an address; None for one without."""
    found = (
        await conn.execute(
            select(User.email, User.first_name, Instrument.name, CfdPosition.lot_size)
            .select_from(CfdPosition)
            .join(User, User.id == CfdPosition.user_id)
            .join(Instrument, Instrument.id == CfdPosition.instrument_id)
            .where(CfdPosition.id == UUID(event["positionId"]))
        )
    ).first()
    if found is None or not found.email:
        return None
    outbox_id: UUID = await email.enqueue(
        conn,
        to_address=found.email,
        template=WASHOUT_TEMPLATE,
        context={
            "firstName": found.first_name,
            "playerName": found.name,
            "lotSize": str(found.lot_size),
            "exitPrice": str(from_cents(int(event["priceCents"]))),
            "realizedPnl": str(from_cents(int(event["pnlCents"]))),
            "marginLevel": str(Decimal(int(event["levelBasis"])) / 100),
        },
        user_id=UUID(event["userId"]),
    )
    return outbox_id
