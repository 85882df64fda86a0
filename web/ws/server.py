"""The `ws` process: checks before the upgrade, the connection handler, /health and /metrics.

`GET /ws/prices?token=…` is refused before the handshake with the error envelope of the HTTP API:
404 for any other path, 403 for an `Origin` outside CORS_ORIGINS, 503 when the process is full,
401 for a missing, bad, expired, spent or non-`ws` token, 429 when the token's user already holds
WS_MAX_CONNECTIONS_PER_USER connections on all replicas together. Once open, a connection that
keeps sending bad messages or keeps sending over its command rate is closed with 1008. The
process holds no Postgres connection: Redis (hot state, pub/sub) and the token key are all it
needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import json
import logging
import signal
import socket
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import falcon
from redis.asyncio import Redis
from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from ftl.core import metrics
from ftl.core.config import Settings
from ftl.core.errors import ErrorKind, Forbidden, FtlError, NotFound, Unauthorized, Unavailable
from ftl.store import hotstore
from ftl.store.auth.tokens import Tokens, TokenType
from web.errors import STATUS_BY_KIND, envelope
from web.ws.config import WsConfig
from web.ws.hub import Client, Hub
from web.ws.limits import Admission, UserConnections
from web.ws.metrics import CONTENT_TYPE, WsMetrics

log = logging.getLogger(__name__)

PRICES_PATH = "/ws/prices"
CLOSE_REASONS = {
    "bad_messages": "too many bad messages",
    "rate_limited": "too many commands over the rate limit",
}
JSON_TYPE = "application/json"
REDIS_POOL_SIZE = 64  # PERF: handshake and presence bursts queue for these instead of failing


def _response(status: int, body: bytes, content_type: str) -> Response:
    phrase = http.HTTPStatus(status).phrase
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
        ]
    )
    return Response(status, phrase, headers, body)


def _json(status: int, body: object) -> Response:
    return _response(status, json.dumps(body, separators=(",", ":")).encode(), JSON_TYPE)


class TooManyConnections(FtlError):
    kind = ErrorKind.RATE_LIMITED


class WsServer:
    def __init__(self, config: WsConfig, redis: Redis, tokens: Tokens) -> None:
        self.config = config
        self.redis = redis
        self.tokens = tokens
        self.metrics = WsMetrics()
        self.hub = Hub(redis, config, self.metrics)
        self.user_connections = UserConnections(
            redis, config.max_connections_per_user, config.connection_lease_s
        )
        self.port = config.port

    def open_connections(self) -> list[tuple[str, str]]:
        """(user id, connection id) of every open connection: the leases to renew."""
        return [(client.user_id, str(client.connection.id)) for client in self.hub.clients]

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """Answer /health and /metrics; admit or refuse an upgrade before the handshake."""
        url = urlsplit(request.path)
        if url.path == "/health":
            return _json(200, {"status": "ok", "connections": len(self.hub.clients)})
        if url.path == "/metrics":
            # APPSEC: the figures tell an attacker how loaded and how exposed the process is.
            if not metrics.scrape_allowed(
                request.headers.get("Authorization"), self.config.metrics_token
            ):
                body = envelope("unauthorized", "/metrics needs the METRICS_TOKEN bearer token.")
                return _json(401, body)
            return _response(200, self.metrics.render(), CONTENT_TYPE)
        try:
            if url.path != PRICES_PATH:
                raise NotFound("not_found", f"Connect to {PRICES_PATH}.")
            origin = request.headers.get("Origin")
            # APPSEC: browsers always send Origin, so a foreign page is refused here; clients
            # without one (bench, native apps) still need a valid token.
            if origin is not None and origin not in self.config.cors_origins:
                raise Forbidden("forbidden", "This origin may not connect.")
            if len(self.hub.clients) >= self.config.max_connections:
                raise Unavailable("unavailable", "This server is full; try again shortly.")
            tokens = parse_qs(url.query).get("token")
            if not tokens:
                raise Unauthorized("unauthorized", "A ws token is required (POST /api/ws/token).")
            claims = self.tokens.verify(tokens[0], TokenType.WS)
            # APPSEC: the token travels in the URL (proxy logs), so it opens one connection only.
            admission = await self.user_connections.admit(
                claims.sub, str(connection.id), claims.jti, claims.exp
            )
            if admission is Admission.TOKEN_SPENT:
                raise Unauthorized("unauthorized", "This ws token was already used.")
            if admission is Admission.USER_FULL:
                cap = self.config.max_connections_per_user
                raise TooManyConnections(
                    "too_many_connections",
                    f"At most {cap} open connections per user; close one first.",
                    {"maxConnections": cap},
                )
        except FtlError as error:
            self.metrics.rejections.labels(error.code).inc()
            status = falcon.http_status_to_code(STATUS_BY_KIND[error.kind])
            return _json(status, envelope(error.code, error.message, error.details))
        except RedisError as exc:
            log.warning("Redis failed during a handshake: %s", exc)
            return _json(503, envelope("unavailable", "Try again in a moment."))
        # NOTE: `username` is websockets' slot for the authenticated identity of a connection.
        connection.username = claims.sub
        return None

    async def handler(self, connection: ServerConnection) -> None:
        if self.config.send_buffer_bytes is not None:
            sock: socket.socket = connection.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer_bytes)
        client = self.hub.connect(connection, connection.username)
        try:
            async for message in connection:
                await self.hub.handle(client, message)
                reason = client.closing_reason()
                if reason is not None:
                    await self._close_for_abuse(client, reason)
                    break
        except ConnectionClosed:
            pass
        finally:
            self.hub.disconnect(client)  # also releases its slot of the per-user cap

    async def _close_for_abuse(self, client: Client, reason: str) -> None:
        self.metrics.evictions[reason].inc()
        text = CLOSE_REASONS[reason]
        log.info("closing a connection of user %s: %s", client.user_id, text)
        connection = client.connection
        closing = asyncio.create_task(connection.close(CloseCode.POLICY_VIOLATION, text))
        # NOTE: a flooding client's messages fill the receive queue and pause reading, which
        # would keep its close frame unread until close_timeout; read past them (unhandled).
        with contextlib.suppress(ConnectionClosed):
            async for _ in connection:
                pass
        await closing


@contextlib.asynccontextmanager
async def running(config: WsConfig, redis: Redis, tokens: Tokens) -> AsyncIterator[WsServer]:
    """A serving `ws` server (its pub/sub confirmed) while inside; `.port` is the bound port."""
    server = WsServer(config, redis, tokens)
    async with (
        server.hub.running(),
        server.user_connections.renewing(server.open_connections),
        serve(
            server.handler,
            config.host,
            config.port,
            process_request=server.process_request,
            compression=None,  # SPEC §7: no per-message compression
            ping_interval=config.ping_interval_s,
            ping_timeout=config.ping_timeout_s,
            close_timeout=config.close_timeout_s,
            max_size=config.max_frame_bytes,
            write_limit=config.write_limit_bytes,
            backlog=config.listen_backlog,
        ) as listening,
    ):
        server.port = next(iter(listening.sockets)).getsockname()[1]
        yield server


async def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then close every connection (going away) and exit."""
    redis = hotstore.connect(settings, pool_size=REDIS_POOL_SIZE)
    tokens = Tokens(
        settings.jwt_private_key_b64, issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running(WsConfig.from_settings(settings), redis, tokens) as server:
            log.info("ws serving on %s:%s", settings.web_host, server.port)
            await stop.wait()
    finally:
        await redis.aclose()
