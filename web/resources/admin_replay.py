"""POST /api/admin/replay {userId, since?} (SPEC §3.3): enqueue one user's margin replay; 202.
Admin only. `since` (ISO-8601) places the start of instruments the user has no watermark for
(docs/decisions/0041)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import falcon
import falcon.asgi

from ftl.accounts.users import get_account
from ftl.core.errors import InvalidInput, NotFound
from ftl.store.services import Services
from web.auth import require_admin
from web.body import read_body
from web.schemas import ReplayBody, ReplayEnqueued
from workers import margin


def since_field(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise InvalidInput("validation_error", "since must be an ISO-8601 time.", {"field": "since"})


class AdminReplay:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await require_admin(req, self.services)
        body = await read_body(req, ReplayBody)
        user_id, since = body.user_id, since_field(body.since)
        if await get_account(self.services.engine, user_id) is None:
            raise NotFound("not_found", "No such user.", {"userId": str(user_id)})
        since_iso = since.isoformat() if since else None
        await asyncio.to_thread(margin.replay_user.send, str(user_id), since_iso)
        resp.status = falcon.HTTP_202
        resp.media = ReplayEnqueued(enqueued=True, user_id=str(user_id), since=since_iso)


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route("/api/admin/replay", AdminReplay(services))
