"""Who is calling: the access token from `Authorization: Bearer` or the `ftl_access` cookie;
the session cookies; the admin check and the coming-soon gate."""

from __future__ import annotations

from datetime import UTC, datetime

import falcon.asgi

from ftl.accounts.sessions import FAMILY_CLAIM, ROLE_CLAIM, SignIn
from ftl.accounts.users import Account, get_account
from ftl.core.errors import Forbidden, Unauthorized, Unavailable
from ftl.store import keys
from ftl.store.auth.tokens import TTL_S, Claims, TokenType
from ftl.store.db.models import UserRole
from ftl.store.flags import COMING_SOON, MAINTENANCE_MODE
from ftl.store.services import Services

ACCESS_COOKIE = "ftl_access"
REFRESH_COOKIE = "ftl_refresh"
# APPSEC: the refresh cookie only travels to the auth routes, never with every API call.
REFRESH_COOKIE_PATH = "/api/auth"


def presented_token(req: falcon.asgi.Request) -> str | None:
    header = req.get_header("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    cookies = req.get_cookie_values(ACCESS_COOKIE)
    return cookies[0] if cookies else None


async def authenticate(
    req: falcon.asgi.Request,
    services: Services,
    *,
    check_revoked: bool = True,
    coming_soon_exempt: bool = False,
    maintenance_gate: bool = False,
) -> Claims:
    """The caller's access-token claims; 401 when absent, invalid, expired or revoked (its jti
    blocked, or its session family ended); 503 `coming_soon` to non-admins while that flag is on,
    and with `maintenance_gate` (a user's trade or level change) 503 `maintenance` while
    `maintenanceMode` is.

    PERF: routes whose Lua script checks `jti_block:{jti}` itself (the trade path) pass
    check_revoked=False to keep to one Redis round trip; the gate reads a per-process snapshot.
    """
    token = presented_token(req)
    if token is None:
        raise Unauthorized("unauthorized", "Sign in first.")
    claims = services.tokens.verify(token, TokenType.ACCESS)
    if check_revoked:
        family = claims.extra.get(FAMILY_CLAIM)
        if isinstance(family, str):
            blocked, live = await services.redis.mget(
                keys.revoked_jti(claims.jti), keys.refresh_family(family)
            )
            ended = live is None
        else:
            blocked, ended = await services.redis.get(keys.revoked_jti(claims.jti)), False
        if blocked is not None or ended:
            raise Unauthorized("unauthorized", "The session has ended.")
    if claims.extra.get(ROLE_CLAIM) == UserRole.admin.value:
        return claims
    if not coming_soon_exempt and await services.flags.enabled(COMING_SOON):
        raise Unavailable("coming_soon", "FTL opens soon.")
    if maintenance_gate and await services.flags.enabled(MAINTENANCE_MODE):
        raise Unavailable("maintenance", "FTL is under maintenance; trading resumes shortly.")
    return claims


async def require_admin(req: falcon.asgi.Request, services: Services) -> Account:
    """The calling admin; 403 for anyone else. The role is read from the database, not the token,
    so a demoted admin loses access at once."""
    claims = await authenticate(req, services)
    account = await get_account(services.engine, claims.user_id)
    # APPSEC: admin routes change the game for everyone; the role in Postgres is the authority.
    if account is None or account.role is not UserRole.admin:
        raise Forbidden("forbidden", "Only an admin may do this.")
    return account


# The cookies of a session: (name, path, lifetime in seconds).
SESSION_COOKIES = (
    (ACCESS_COOKIE, "/", TTL_S[TokenType.ACCESS]),
    (REFRESH_COOKIE, REFRESH_COOKIE_PATH, TTL_S[TokenType.REFRESH]),
)
LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


def _session_cookies(
    resp: falcon.asgi.Response, tokens: tuple[str, str] | None, *, secure: bool
) -> None:
    """HttpOnly, SameSite=Lax cookies; Secure in production (SPEC §3). Clearing (`tokens` None)
    sends the very same attributes with an empty value that expired long ago: a browser matches
    a cookie by name, path and domain, and a clearing cookie must not be weaker than the one it
    replaces."""
    for (name, path, ttl_s), token in zip(SESSION_COOKIES, tokens or ("", ""), strict=True):
        resp.set_cookie(
            name,
            token,
            max_age=ttl_s if tokens else None,
            expires=None if tokens else LONG_AGO,
            path=path,
            secure=secure,
            http_only=True,
            same_site="Lax",
        )


def set_session_cookies(resp: falcon.asgi.Response, session: SignIn, *, secure: bool) -> None:
    _session_cookies(resp, (session.access_token, session.refresh_token), secure=secure)


def clear_session_cookies(resp: falcon.asgi.Response, *, secure: bool) -> None:
    _session_cookies(resp, None, secure=secure)
