"""Who is calling: the access token from `Authorization: Bearer` or the `ftl_access` cookie."""

from __future__ import annotations

import falcon.asgi

from ftl import keys
from ftl.auth.tokens import Claims, TokenType
from ftl.errors import Unauthorized
from ftl.services import Services

ACCESS_COOKIE = "ftl_access"
REFRESH_COOKIE = "ftl_refresh"


def presented_token(req: falcon.asgi.Request) -> str | None:
    header = req.get_header("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    cookies = req.get_cookie_values(ACCESS_COOKIE)
    return cookies[0] if cookies else None


async def authenticate(
    req: falcon.asgi.Request, services: Services, *, check_revoked: bool = True
) -> Claims:
    """The caller's access-token claims; 401 when absent, invalid, expired or revoked.

    PERF: routes whose Lua script checks `jti_block:{jti}` itself (the trade path) pass
    check_revoked=False to keep to one Redis round trip.
    """
    token = presented_token(req)
    if token is None:
        raise Unauthorized("unauthorized", "Sign in first.")
    claims = services.tokens.verify(token, TokenType.ACCESS)
    if check_revoked and await services.redis.exists(keys.revoked_jti(claims.jti)):
        raise Unauthorized("unauthorized", "The session has ended.")
    return claims
