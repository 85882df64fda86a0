"""/api/auth/*: sign-in, refresh, logout, development logins, and the WebSocket token."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import falcon
import falcon.asgi
from msgspec import UNSET

from ftl.accounts import registration, sessions, users
from ftl.core.errors import InvalidInput, Unauthorized
from ftl.core.text import human_text
from ftl.store.auth import google
from ftl.store.auth.tokens import TTL_S, Claims, TokenType
from ftl.store.services import Services
from web.auth import (
    REFRESH_COOKIE,
    authenticate,
    clear_session_cookies,
    presented_token,
    set_session_cookies,
)
from web.body import read_body, read_optional_body
from web.schemas import (
    DevBatchBody,
    DevLoginBody,
    DevUser,
    DevUsers,
    GoogleSignInBody,
    OtpSent,
    OtpVerified,
    ProfileBody,
    RefreshTokenBody,
    RegistrationTicketBody,
    SocketToken,
    VerifyOtpBody,
)
from workers import email as email_actor

DEV_BATCH_PREFIX = "bot-"


def refresh_token_of(req: falcon.asgi.Request, body: RefreshTokenBody) -> str | None:
    # NOTE: absent falls back to the cookie (so does an empty one).
    token = None if body.refresh_token is UNSET else body.refresh_token
    cookies = req.get_cookie_values(REFRESH_COOKIE)
    return token or (cookies[0] if cookies else None)


async def send_email(outbox_id: uuid.UUID) -> None:
    """Hand an outbox row to the `email` actor. NOTE: enqueueing is a blocking Redis call."""
    await asyncio.to_thread(email_actor.send_email.send, str(outbox_id))


class GoogleSignIn:
    """Known user: 200 like a login. New user: 422 `needs_profile` with a registration ticket,
    and a 6-digit code emailed."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, GoogleSignInBody)
        id_token = body.id_token
        if not isinstance(id_token, str) or not id_token:
            raise InvalidInput("validation_error", "idToken is required.", {"field": "idToken"})
        nonce = google.nonce_of(body.nonce)
        identity = await google.verify_id_token(
            self.services.google_keys,
            self.services.redis,
            id_token,
            nonce,
            audience=google.google_audience(self.services.settings),
        )
        account = await users.find_google_account(
            self.services.engine, identity.subject, identity.email
        )
        if account is None:
            started = await registration.start(self.services, identity)
            await send_email(started.outbox_id)
            resp.status = falcon.HTTP_422
            resp.media = started.answer()
            return
        session = await sessions.start(self.services, account)
        set_session_cookies(resp, session, secure=self.services.settings.is_production)
        resp.media = session.answer()


class VerifyOtp:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, VerifyOtpBody)
        await registration.verify_code(self.services, body.registration_ticket, body.otp)
        resp.media = OtpVerified(verified=True)


class ResendOtp:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, RegistrationTicketBody)
        await send_email(await registration.resend(self.services, body.registration_ticket))
        resp.media = OtpSent(sent=True)


class CompleteRegistration:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, ProfileBody)
        completed = await registration.complete(self.services, body.fields())
        await send_email(completed.welcome_outbox_id)
        session = await sessions.start(self.services, completed.account)
        set_session_cookies(resp, session, secure=self.services.settings.is_production)
        resp.status = falcon.HTTP_201
        resp.media = session.answer()


class Refresh:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        token = refresh_token_of(req, await read_optional_body(req, RefreshTokenBody))
        if token is None:
            raise Unauthorized("unauthorized", "No refresh token.")
        session = await sessions.rotate(self.services, token)
        set_session_cookies(resp, session, secure=self.services.settings.is_production)
        resp.media = session.answer()


class Logout:
    def __init__(self, services: Services) -> None:
        self.services = services

    def _claims(self, token: str | None, typ: TokenType) -> list[Claims]:
        if token is None:
            return []
        try:
            return [self.services.tokens.verify(token, typ)]
        except Unauthorized:
            # NOTE: logout is idempotent; a dead or foreign token has nothing left to revoke.
            return []

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_optional_body(req, RefreshTokenBody)
        claims = self._claims(presented_token(req), TokenType.ACCESS) + self._claims(
            refresh_token_of(req, body), TokenType.REFRESH
        )
        await sessions.revoke(self.services, claims)
        clear_session_cookies(resp, secure=self.services.settings.is_production)
        resp.status = falcon.HTTP_204


class DevLogin:
    """Outside production only (not routed otherwise): sign in as a synthetic user."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        name = users.display_name_of((await read_body(req, DevLoginBody)).display_name)
        (account,) = await users.synthetic_accounts(self.services.engine, [name])
        session = await sessions.start(self.services, account)
        set_session_cookies(resp, session, secure=self.services.settings.is_production)
        resp.media = session.answer()


class DevBatch:
    """Outside production only: up to 1,000 synthetic users `{prefix}0001`..., each with an
    access token (no refresh session: load tests sign in again rather than refresh)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, DevBatchBody)
        if not body.count.is_integer():
            raise InvalidInput(
                "validation_error",
                f"count must be a whole number from 1 to {users.DEV_BATCH_MAX}.",
                {"field": "count"},
            )
        prefix = human_text(
            DEV_BATCH_PREFIX if body.prefix is UNSET else body.prefix,
            "prefix",
            users.DEV_BATCH_PREFIX_MAX_CHARS,
        )
        names = [f"{prefix}{number:04d}" for number in range(1, int(body.count) + 1)]
        created = await users.synthetic_accounts(self.services.engine, names)
        resp.media = DevUsers(
            users=[
                DevUser(
                    user=account.answer(),
                    access_token=sessions.issue_access(self.services, account),
                )
                for account in created
            ],
            expires_in=TTL_S[TokenType.ACCESS],
        )


class WsToken:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        claims = await authenticate(req, self.services)
        token, issued = self.services.tokens.issue(TokenType.WS, claims.sub)
        resp.media = SocketToken(token=token, expires_in=issued.exp - issued.iat)


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route("/api/auth/google", GoogleSignIn(services))
    app.add_route("/api/auth/verify-otp", VerifyOtp(services))
    app.add_route("/api/auth/resend-otp", ResendOtp(services))
    app.add_route("/api/auth/google/complete", CompleteRegistration(services))
    app.add_route("/api/auth/refresh", Refresh(services))
    app.add_route("/api/auth/logout", Logout(services))
    app.add_route("/api/ws/token", WsToken(services))
    if not services.settings.is_production:
        # APPSEC: in production these routes do not exist at all (404), not merely refuse.
        app.add_route("/api/auth/dev", DevLogin(services))
        app.add_route("/api/auth/dev/batch", DevBatch(services))


class GoogleKeysRefresh:
    """Middleware: refresh Google's JWKS every 6 hours in the background while the app runs."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._task: asyncio.Task[None] | None = None

    async def process_startup(self, scope: object, event: object) -> None:
        self._task = asyncio.create_task(self.services.google_keys.refresh_forever())

    async def process_shutdown(self, scope: object, event: object) -> None:
        if self._task is not None:
            self._task.cancel()
