"""Registration in three steps (SPEC §3.1): Google sign-in of a new user -> a 6-digit email code
-> the profile, which creates the user and the wallet.

The registration ticket is an FTL token of type `registration` (5 minutes; `sub` is the Google
subject, the email and names ride along). The code is kept in Redis only as a SHA-256 of the
ticket id and the code, lives 5 minutes, allows 5 attempts (then the ticket dies) and can be sent
again after 60 s.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from psycopg.errors import UniqueViolation
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from ftl.accounts import email, referrals, users
from ftl.accounts.users import Account
from ftl.core.answers import DISTRICT_COUNT, Answer
from ftl.core.errors import Conflict, Forbidden, InvalidInput, RateLimited, Unauthorized
from ftl.core.json_input import whole_number
from ftl.core.text import human_text
from ftl.store import keys
from ftl.store.auth.google import GoogleIdentity
from ftl.store.auth.tokens import Claims, TokenType
from ftl.store.db.models import User
from ftl.store.services import Services

OTP_DIGITS = 6
OTP_TTL_S = 300
OTP_ATTEMPTS = 5
OTP_RESEND_COOLDOWN_S = 60
NAME_MAX_CHARS = 50
MIN_AGE, MAX_AGE = 18, 120
PHONE = re.compile(r"[6-9][0-9]{9}")  # NOTE: not \d, which also matches non-ASCII digits
DISTRICT_IDS = range(1, DISTRICT_COUNT + 1)
NO_LIVE_CODE, ALREADY_VERIFIED = -1, -2
REFERRAL_CODE_ROUNDS = 5


def _code_hash(ticket_jti: str, code: str) -> str:
    return hashlib.sha256(f"{ticket_jti}:{code}".encode()).hexdigest()


def new_code() -> str:
    return f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"


async def ticket_claims(services: Services, ticket: object) -> Claims:
    """A live registration ticket's claims; 401 when missing, invalid, expired or spent."""
    if not isinstance(ticket, str) or not ticket:
        raise Unauthorized("unauthorized", "A registration ticket is required.")
    claims = services.tokens.verify(ticket, TokenType.REGISTRATION)
    if await services.redis.exists(keys.revoked_jti(claims.jti)):
        raise Unauthorized("unauthorized", "The registration ticket is no longer valid.")
    return claims


async def _kill_ticket(services: Services, claims: Claims) -> None:
    ttl_s = max(1, claims.exp - int(time.time()))
    async with services.redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.revoked_jti(claims.jti), "1", ex=ttl_s)
        pipe.delete(keys.registration_otp(claims.jti), keys.otp_cooldown(claims.jti))
        await pipe.execute()


async def _send_code(services: Services, claims: Claims) -> uuid.UUID:
    """A fresh code for the ticket: stored hashed, emailed through the outbox."""
    code = new_code()
    async with services.redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.registration_otp(claims.jti))
        pipe.hset(
            keys.registration_otp(claims.jti),
            mapping={
                "hash": _code_hash(claims.jti, code),
                "attemptsLeft": str(OTP_ATTEMPTS),
                "verified": "0",
            },
        )
        pipe.expire(keys.registration_otp(claims.jti), OTP_TTL_S)
        await pipe.execute()
    async with services.engine.begin() as conn:
        return await email.enqueue(
            conn,
            to_address=str(claims.extra["email"]),
            template="registration_code",
            context={"code": code, "givenName": claims.extra.get("givenName") or "there"},
        )


class NeedsProfile(Answer):
    """The 422 body of SPEC §3.1 for a new user."""

    needs_profile: Literal[True]
    registration_ticket: str
    email: str
    given_name: str | None
    family_name: str | None


@dataclass(frozen=True)
class Started:
    ticket: str
    identity: GoogleIdentity
    outbox_id: uuid.UUID

    def answer(self) -> NeedsProfile:
        return NeedsProfile(
            needs_profile=True,
            registration_ticket=self.ticket,
            email=self.identity.email,
            given_name=self.identity.given_name,
            family_name=self.identity.family_name,
        )


async def start(services: Services, identity: GoogleIdentity) -> Started:
    """A new user signed in with Google: a ticket, and a code on its way to his inbox."""
    ticket, claims = services.tokens.issue(
        TokenType.REGISTRATION,
        identity.subject,
        extra={
            "email": identity.email,
            "givenName": identity.given_name,
            "familyName": identity.family_name,
        },
    )
    await services.redis.set(keys.otp_cooldown(claims.jti), "1", ex=OTP_RESEND_COOLDOWN_S)
    return Started(ticket, identity, await _send_code(services, claims))


async def resend(services: Services, ticket: object) -> uuid.UUID:
    """Another code (the old one dies); 429 with Retry-After within 60 s of the last one."""
    claims = await ticket_claims(services, ticket)
    if not await services.redis.set(
        keys.otp_cooldown(claims.jti), "1", nx=True, ex=OTP_RESEND_COOLDOWN_S
    ):
        wait_s = await services.redis.ttl(keys.otp_cooldown(claims.jti))
        raise RateLimited(max(1, wait_s), "A code was sent less than a minute ago.")
    return await _send_code(services, claims)


def _otp_of(raw: object) -> str:
    if not isinstance(raw, str) or len(raw) != OTP_DIGITS or not raw.isascii() or not raw.isdigit():
        raise InvalidInput(
            "validation_error", f"otp is the {OTP_DIGITS}-digit code.", {"field": "otp"}
        )
    return raw


async def verify_code(services: Services, ticket: object, otp: object) -> None:
    """Mark the ticket's code verified; 401 `invalid_otp` with `attemptsLeft` on a wrong code,
    and after the fifth wrong code the ticket dies."""
    claims = await ticket_claims(services, ticket)
    code = _otp_of(otp)
    outcome = await services.scripts.call("otp_attempt", keys=[keys.registration_otp(claims.jti)])
    left, stored = int(outcome[0]), str(outcome[1])
    if left == ALREADY_VERIFIED:
        return
    if left == NO_LIVE_CODE:
        raise Unauthorized("otp_expired", "The code has expired; ask for a new one.")
    # APPSEC: constant-time comparison, so timing does not reveal how much of the code matched.
    if hmac.compare_digest(stored, _code_hash(claims.jti, code)):
        await services.redis.hset(keys.registration_otp(claims.jti), "verified", "1")
        return
    if left == 0:
        await _kill_ticket(services, claims)
    raise Unauthorized("invalid_otp", "The code is not right.", {"attemptsLeft": left})


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput("validation_error", message, {"field": field})


def _name(raw: object, field: str) -> str:
    return human_text(raw, field, NAME_MAX_CHARS)


def _whole_number(raw: object, field: str, allowed: range, message: str) -> int:
    number = whole_number(raw)
    if number is None or number not in allowed:
        raise _invalid(field, message)
    return number


@dataclass(frozen=True)
class Profile:
    first_name: str
    last_name: str | None
    age: int
    phone: str
    district_id: int
    referral_code: object
    invite_id: object

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Profile:
        """Every rule of SPEC §3.1; 400 naming the first field that breaks one (unknown fields
        are refused at the edge: web/schemas.py ProfileBody)."""
        first_name = _name(body.get("firstName"), "firstName")
        raw_last_name = body.get("lastName")
        last_name = None if raw_last_name in (None, "") else _name(raw_last_name, "lastName")
        age = _whole_number(
            body.get("age"),
            "age",
            range(MIN_AGE, MAX_AGE + 1),
            f"age must be a whole number from {MIN_AGE} to {MAX_AGE}.",
        )
        phone = body.get("phone")
        if not isinstance(phone, str) or PHONE.fullmatch(phone) is None:
            raise _invalid("phone", "phone is 10 digits starting with 6, 7, 8 or 9.")
        return cls(
            first_name=first_name,
            last_name=last_name,
            age=age,
            phone=phone,
            district_id=_whole_number(
                body.get("districtId"), "districtId", DISTRICT_IDS, "districtId is 1 to 14."
            ),
            referral_code=body.get("referralCode"),
            invite_id=body.get("inviteId"),
        )


@dataclass(frozen=True)
class Completed:
    account: Account
    welcome_outbox_id: uuid.UUID


def _constraint(exc: IntegrityError) -> str | None:
    origin = exc.orig
    if isinstance(origin, UniqueViolation):
        return origin.diag.constraint_name
    return None


async def complete(services: Services, body: dict[str, Any]) -> Completed:
    """Create the user, his wallet, his referral and his welcome email in one transaction.

    409 `phone_taken` when the phone is someone else's (the unique index decides, so two
    concurrent registrations of one phone cannot both pass), 409 `already_registered` when the
    Google account already has a user. Nothing is written on any failure.
    """
    claims = await ticket_claims(services, body.get("registrationTicket"))
    profile = Profile.parse(body)
    verified = await services.redis.hget(keys.registration_otp(claims.jti), "verified")
    if verified != "1":
        raise Forbidden("otp_not_verified", "Confirm the emailed code first.")
    display_name = " ".join(p for p in (profile.first_name, profile.last_name) if p)
    account: Account | None = None
    for _ in range(REFERRAL_CODE_ROUNDS):
        try:
            async with services.engine.begin() as conn:
                claim = await referrals.resolve_claim(
                    conn, profile.referral_code, profile.invite_id
                )
                row = (
                    await conn.execute(
                        insert(User)
                        .values(
                            google_sub=claims.sub,
                            email=str(claims.extra["email"]),
                            first_name=profile.first_name,
                            last_name=profile.last_name,
                            display_name=display_name,
                            age=profile.age,
                            phone=profile.phone,
                            district_id=profile.district_id,
                            referral_code=referrals.new_referral_code(),
                        )
                        .returning(*users.ACCOUNT_COLUMNS)
                    )
                ).one()
                account = Account(*row)
                await users.insert_wallet(conn, [account.id])
                if claim is not None:
                    await referrals.record(conn, account.id, claim)
                outbox_id = await email.enqueue(
                    conn,
                    to_address=str(claims.extra["email"]),
                    template="welcome",
                    user_id=account.id,
                    context={
                        "firstName": account.first_name,
                        "referralCode": account.referral_code,
                        "publicUrl": services.settings.public_url,
                    },
                )
            break
        except IntegrityError as exc:
            constraint = _constraint(exc)
            if constraint == "uq_users_phone":
                raise Conflict("phone_taken", "This phone number is already registered.") from None
            if constraint == "uq_users_google_sub":
                raise Conflict(
                    "already_registered", "This Google account is already registered."
                ) from None
            if constraint != "uq_users_referral_code":
                raise
    if account is None:  # pragma: no cover - five referral-code collisions in a row
        raise Conflict("try_again", "Please try again.")
    await _kill_ticket(services, claims)
    return Completed(account, outbox_id)
