"""Email through an outbox (SPEC §5.5): a row in `email_outbox` is written in the same transaction
as what causes it; the `email` actor delivers it with retries through SMTP (`SMTP_URL`) or, when
that is unset, a no-op sender that only marks it sent, so development boots with no secrets.

Templates are plain text + HTML, filled from the row's `context` (HTML-escaped in the HTML part).
"""

from __future__ import annotations

import asyncio
import html
import logging
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from string import Template
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import func

from ftl.core.config import ConfigError, Settings
from ftl.store.db.models import EmailOutbox, EmailStatus

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6  # the first try and the actor's 5 retries
SMTP_TIMEOUT_S = 10
# APPSEC: a code is a secret; once the mail is out, the outbox keeps no copy of it.
SECRET_CONTEXT_FIELDS = ("code",)


@dataclass(frozen=True)
class Template3:
    """Subject, plain text and HTML of one email, as string.Template sources."""

    subject: str
    text: str
    html: str


TEMPLATES = {
    "registration_code": Template3(
        subject="Your FTL code: $code",
        text=(
            "Hello $givenName,\n\n"
            "Your FTL sign-up code is $code. It works for 5 minutes.\n\n"
            "If you did not try to sign up to FTL, ignore this email.\n"
        ),
        html=(
            "<p>Hello $givenName,</p>"
            "<p>Your FTL sign-up code is <strong>$code</strong>. It works for 5 minutes.</p>"
            "<p>If you did not try to sign up to FTL, ignore this email.</p>"
        ),
    ),
    "welcome": Template3(
        subject="Welcome to FTL, $firstName",
        text=(
            "Hello $firstName,\n\n"
            "Your FTL account is ready with 10,000.00 points to trade.\n"
            "Your referral code is $referralCode: friends who sign up with it earn you a bonus.\n\n"
            "$publicUrl\n"
        ),
        html=(
            "<p>Hello $firstName,</p>"
            "<p>Your FTL account is ready with 10,000.00 points to trade.</p>"
            "<p>Your referral code is <strong>$referralCode</strong>: friends who sign up with it"
            " earn you a bonus.</p>"
            '<p><a href="$publicUrl">$publicUrl</a></p>'
        ),
    ),
    "washout": Template3(
        subject="FTL: your $playerName position was washed out",
        text=(
            "Hello $firstName,\n\n"
            "Your margin level fell to $marginLevel %, so your position of $lotSize lots on"
            " $playerName was closed at $exitPrice (realised PnL $realizedPnl).\n"
            "Washouts happen at the tick of the breach, whether you are online or not.\n"
        ),
        html=(
            "<p>Hello $firstName,</p>"
            "<p>Your margin level fell to $marginLevel %, so your position of $lotSize lots on"
            " <strong>$playerName</strong> was closed at $exitPrice (realised PnL"
            " $realizedPnl).</p>"
            "<p>Washouts happen at the tick of the breach, whether you are online or not.</p>"
        ),
    ),
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def render(template: str, context: dict[str, Any]) -> Rendered:
    """Fill a template; KeyError when the context lacks a field it uses."""
    source = TEMPLATES[template]
    plain = {name: str(value) for name, value in context.items()}
    escaped = {name: html.escape(value) for name, value in plain.items()}
    return Rendered(
        subject=Template(source.subject).substitute(plain),
        text=Template(source.text).substitute(plain),
        html=Template(source.html).substitute(escaped),
    )


async def enqueue(
    conn: AsyncConnection,
    *,
    to_address: str,
    template: str,
    context: dict[str, Any],
    user_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """The outbox row, in the caller's transaction; returns its id for the actor."""
    render(template, context)  # NOTE: a template/context mismatch fails here, not in the worker
    outbox_id = uuid.uuid4()
    await conn.execute(
        insert(EmailOutbox).values(
            id=outbox_id,
            user_id=user_id,
            to_address=to_address,
            template=template,
            context=context,
        )
    )
    return outbox_id


class Sender(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class NoopSender:
    """SMTP_URL unset: the email is logged (without subject or body) and counts as sent."""

    async def send(self, message: EmailMessage) -> None:
        # APPSEC: the subject of a registration email carries its code; logs never do.
        log.info("email not sent (no SMTP_URL): %s to %s", message["Message-ID"], message["To"])


@dataclass(frozen=True)
class SmtpSender:
    """`smtp://[user:pass@]host[:port]` (STARTTLS when the server offers it) or `smtps://`."""

    url: str

    def _deliver(self, message: EmailMessage) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError("config: SMTP_URL must be smtp://host:port or smtps://host:port")
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if parts.scheme == "smtps":
            client = smtplib.SMTP_SSL(
                parts.hostname, parts.port or 465, timeout=SMTP_TIMEOUT_S, context=context
            )
        else:
            client = smtplib.SMTP(parts.hostname, parts.port or 25, timeout=SMTP_TIMEOUT_S)
        with client:
            client.ehlo()
            if parts.scheme == "smtp" and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)

    async def send(self, message: EmailMessage) -> None:
        # NOTE: smtplib blocks; a thread keeps the event loop of the worker free.
        await asyncio.to_thread(self._deliver, message)


def sender_for(settings: Settings) -> Sender:
    return SmtpSender(settings.smtp_url) if settings.smtp_url else NoopSender()


def message_of(rendered: Rendered, *, sender: str, to_address: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = sender
    message["To"] = to_address
    message["Message-ID"] = make_msgid(domain="ftl.local")
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


async def deliver(
    engine: AsyncEngine, settings: Settings, outbox_id: uuid.UUID, sender: Sender | None = None
) -> EmailStatus | None:
    """Send one pending outbox row and mark it; None when it is not pending (already sent, or
    another worker holds it). A failed send records the error and raises, so the actor retries;
    after MAX_ATTEMPTS the row is `failed`."""
    sender = sender or sender_for(settings)
    failure: Exception | None = None
    async with engine.begin() as conn:
        # NOTE: the row lock spans the send, so two workers never send the same email twice.
        outbox = (
            await conn.execute(
                select(
                    EmailOutbox.template,
                    EmailOutbox.context,
                    EmailOutbox.to_address,
                    EmailOutbox.attempts,
                )
                .where(EmailOutbox.id == outbox_id, EmailOutbox.status == EmailStatus.pending)
                .with_for_update(skip_locked=True)
            )
        ).first()
        if outbox is None:
            return None
        message = message_of(
            render(outbox.template, outbox.context),
            sender=settings.email_from,
            to_address=outbox.to_address,
        )
        attempts = outbox.attempts + 1
        try:
            await sender.send(message)
        except (OSError, smtplib.SMTPException) as exc:
            failure = exc
        if failure is None:
            status = EmailStatus.sent
            changes: dict[str, Any] = {
                "sent_at": func.now(),
                "last_error": None,
                "context": {
                    k: v for k, v in outbox.context.items() if k not in SECRET_CONTEXT_FIELDS
                },
            }
        else:
            status = EmailStatus.failed if attempts >= MAX_ATTEMPTS else EmailStatus.pending
            changes = {"last_error": str(failure)[:500]}
        await conn.execute(
            update(EmailOutbox)
            .where(EmailOutbox.id == outbox_id)
            .values(attempts=attempts, status=status, **changes)
        )
    if failure is not None:
        raise failure
    return status
