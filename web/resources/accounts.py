"""/api/me, flags, districts and referrals."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi
from msgspec import UNSET

from ftl.accounts import referrals, users
from ftl.store.flags import flag_name
from ftl.store.services import Services
from ftl.trading import portfolio
from web.auth import authenticate, presented_token, require_admin
from web.body import read_body
from web.schemas import DistrictList, FlagBody, InviteBody, ReferralValidity, SignedIn, SignedOut

SIGNED_OUT = SignedOut(logged_in=False)


class Me:
    """Optional auth: no token is `{loggedIn: false}`; a bad or expired one is 401 so the client
    knows to refresh. Exempt from the coming-soon gate (the page needs to know who is there)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if presented_token(req) is None:
            resp.media = SIGNED_OUT
            return
        claims = await authenticate(req, self.services, coming_soon_exempt=True)
        account = await users.get_account(self.services.engine, claims.user_id)
        if account is None:
            resp.media = SIGNED_OUT
            return
        resp.media = SignedIn(
            logged_in=True,
            user=account.answer(),
            wallet=await portfolio.wallet(self.services, account.id),
            referral_code=account.referral_code,
        )


class Flags:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = await self.services.flags.public()


class AdminFlag:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        await require_admin(req, self.services)
        body = await read_body(req, FlagBody)
        is_public = None if body.is_public is UNSET else body.is_public
        resp.media = await self.services.flags.set(flag_name(name), body.enabled, is_public)


class Districts:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = DistrictList(districts=await users.districts(self.services.engine))


class ReferralValidate:
    """Public, always 200 `{valid}`: says only whether the code exists."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        code = req.get_param("code") or ""
        resp.media = ReferralValidity(valid=await referrals.code_exists(self.services.engine, code))


class Referrals:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        claims = await authenticate(req, self.services)
        # APPSEC: the user comes from the token only; no route parameter names whose summary.
        resp.media = await referrals.summary(self.services.engine, claims.user_id)


class ReferralInvites:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        claims = await authenticate(req, self.services)
        label = referrals.invite_label((await read_body(req, InviteBody)).label)
        resp.media = await referrals.create_invite(self.services.engine, claims.user_id, label)
        resp.status = falcon.HTTP_201


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route("/api/me", Me(services))
    app.add_route("/api/flags", Flags(services))
    app.add_route("/api/admin/flags/{name}", AdminFlag(services))
    app.add_route("/api/districts", Districts(services))
    app.add_route("/api/public/referral/validate", ReferralValidate(services))
    app.add_route("/api/referrals", Referrals(services))
    app.add_route("/api/referrals/invites", ReferralInvites(services))
