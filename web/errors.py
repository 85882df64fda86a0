"""Every failure becomes the error envelope of SPEC §3, here and nowhere else:
`{"error": {"code": "snake_case", "message": "...", "details": {...}}}`. Never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import falcon.asgi
import redis.exceptions
import sqlalchemy.exc

from ftl.core.errors import ErrorKind, FtlError
from ftl.store import hotstore

log = logging.getLogger(__name__)

STATUS_BY_KIND = {
    ErrorKind.INVALID: falcon.HTTP_400,
    ErrorKind.UNAUTHORIZED: falcon.HTTP_401,
    ErrorKind.FORBIDDEN: falcon.HTTP_403,
    ErrorKind.NOT_FOUND: falcon.HTTP_404,
    ErrorKind.CONFLICT: falcon.HTTP_409,
    ErrorKind.UNPROCESSABLE: falcon.HTTP_422,
    ErrorKind.RATE_LIMITED: falcon.HTTP_429,
    ErrorKind.UNAVAILABLE: falcon.HTTP_503,
}

# Falcon's own errors (routing, method, size, media type) by status, with our codes.
CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


async def handle_ftl_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: FtlError, params: dict[str, Any]
) -> None:
    resp.status = STATUS_BY_KIND[ex.kind]
    if ex.retry_after_s is not None:
        resp.set_header("Retry-After", str(ex.retry_after_s))
    resp.media = envelope(ex.code, ex.message, ex.details)


async def handle_http_error(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    ex: falcon.HTTPError,
    params: dict[str, Any],
) -> None:
    status = ex.status_code
    code = ex.code if isinstance(ex.code, str) else CODE_BY_STATUS.get(status, "http_error")
    message = ex.description or ex.title or "Request failed."
    resp.status = ex.status
    if ex.headers:
        resp.set_headers(ex.headers)
    resp.media = envelope(code, message)


async def handle_unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params: dict[str, Any]
) -> None:
    # APPSEC: the trace goes to the log only; the client learns nothing about the inside.
    log.exception("unhandled error on %s %s", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.media = envelope("internal_error", "Something went wrong on our side.")


# A store that does not answer (Postgres restarting, Redis gone): 503, the client retries.
STORE_DOWN: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
RETRY_AFTER_S = 1


async def handle_store_down(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params: dict[str, Any]
) -> None:
    log.warning("store unavailable on %s %s: %s", req.method, req.path, type(ex).__name__)
    resp.status = falcon.HTTP_503
    resp.set_header("Retry-After", str(RETRY_AFTER_S))
    resp.media = envelope("unavailable", "A store is unavailable; try again shortly.")


async def handle_redis_reply_error(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    ex: redis.exceptions.ResponseError,
    params: dict[str, Any],
) -> None:
    # NOTE: a primary without its replicas refuses writes (min-replicas-to-write, decision
    # 0151): nothing was written, the client retries; any other reply error is a bug.
    if hotstore.writes_refused(ex):
        await handle_store_down(req, resp, ex, params)
    else:
        await handle_unexpected(req, resp, ex, params)


def install(app: falcon.asgi.App[Any, Any]) -> None:
    app.add_error_handler(Exception, handle_unexpected)
    for store_down in STORE_DOWN:
        app.add_error_handler(store_down, handle_store_down)
    app.add_error_handler(redis.exceptions.ResponseError, handle_redis_reply_error)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(FtlError, handle_ftl_error)
