"""The OpenAPI 3.1 document of every HTTP route (SPEC §3), served at GET /api/openapi.json.

Built once as a plain dict: the paths are written here, the request and answer schemas are
generated from the Structs the routes decode and answer with (web/schemas.py, decision 0135).
tests/integration/test_openapi.py keeps it true: every routed path and method is here and nothing
else is, and real responses validate against the schema documented for their status.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import falcon
import falcon.asgi
import msgspec

from ftl.core.answers import DistrictId
from ftl.core.cursors import CURSOR_PATTERN
from ftl.market import leaderboard
from ftl.market.scoring import EVERY_POSITION, POSITIONS
from ftl.sportmonks.payload import Stat
from ftl.store.services import Services
from ftl.trading import positions
from web import schemas
from web.body import MAX_BODY_BYTES
from web.schemas import (
    AdminInstrumentBody,
    DevBatchBody,
    DevLoginBody,
    FlagBody,
    GoogleSignInBody,
    InviteBody,
    LevelsBody,
    OpenPositionBody,
    ProfileBody,
    RefreshTokenBody,
    RegistrationTicketBody,
    ReplayBody,
    SettingsBody,
    VerifyOtpBody,
)

Schema = dict[str, Any]

OPENAPI_PATH = "/api/openapi.json"


# --- schema builders ------------------------------------------------------------------------


REF_TEMPLATE = "#/components/schemas/{name}"


def ref(name: str) -> Schema:
    return {"$ref": REF_TEMPLATE.format(name=name)}


def answer(struct: type[msgspec.Struct]) -> Schema:
    """An answer's schema: its Struct's (web/schemas.py), by reference."""
    return ref(struct.__name__)


def obj(properties: dict[str, Schema], optional: tuple[str, ...] = ()) -> Schema:
    """A closed object: every property required unless named optional."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


STRING: Schema = {"type": "string"}
UUID: Schema = {"type": "string", "format": "uuid"}
TIME: Schema = {"type": "string", "format": "date-time"}
BOOL: Schema = {"type": "boolean"}
DISTRICT_ID: Schema = msgspec.json.schema(DistrictId)
# A level or price a client sends: 0.01 to 1,000,000 points, to the cent.
CLIENT_REQUEST_ID: Schema = msgspec.json.schema(schemas.ClientRequestId)
QUERY_TEXT: Schema = {"type": "string", "pattern": schemas.QUERY_TEXT_PATTERN}
CURSOR: Schema = {
    "type": "string",
    "pattern": CURSOR_PATTERN,
    "description": "The nextCursor of the previous page, as given; omit it for the first page.",
}


# Score points per unit of a statistic (SPEC §1.3): -100 to 100, at most 2 decimals; answered
# as decimal strings, taken as numbers or decimal strings.
def stat_weights(position: str) -> Schema:
    # NOTE: the clean sheet is credited to goalkeepers only (ftl/market/scoring.py).
    stats = [s.value for s in Stat if s is not Stat.CLEAN_SHEET or position == "GK"]
    return {
        "type": "object",
        "propertyNames": {"enum": stats},
        "additionalProperties": {
            "anyOf": [
                {"type": "number", "minimum": -100, "maximum": 100, "multipleOf": 0.01},
                {"type": "string", "pattern": "^-?(100(\\.00?)?|[0-9]{1,2}(\\.[0-9]{1,2})?)$"},
            ]
        },
    }


SCHEMAS: dict[str, Schema] = {
    "ScoringWeights": obj(
        {position: stat_weights(position) for position in (*POSITIONS, EVERY_POSITION)},
    ),
}


# --- operations -----------------------------------------------------------------------------

ERROR_CONTENT = {"application/json": {"schema": answer(schemas.Error)}}
ERROR_DESCRIPTIONS = {
    400: "Malformed or invalid input (`invalid_json`, `validation_error`, `unknown_field`).",
    401: "Not signed in, or the token is invalid, expired or revoked.",
    403: "Not allowed (`forbidden`).",
    404: "No such resource (also another user's).",
    409: "A rule of the game refuses the request.",
    413: f"The body is over {MAX_BODY_BYTES} bytes.",
    415: "The body is not application/json.",
    422: "Unprocessable (`needs_profile`, `idempotency_conflict`).",
    429: "Rate limited; wait Retry-After seconds.",
    503: "`coming_soon`, `maintenance` (opens, closes and level changes while the operator"
    " maintains the game), or `unavailable` (a store does not answer; retry shortly).",
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}


def error(status: int) -> Schema:
    response: Schema = {"description": ERROR_DESCRIPTIONS[status], "content": ERROR_CONTENT}
    if status == 429:
        response["headers"] = RETRY_AFTER
    return response


def ok(schema: Schema, description: str = "OK.") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def body(struct: type[schemas.Body], *, required: bool = True) -> Schema:
    """A request body: its schema is the Struct's (web/schemas.py), by reference."""
    return {"required": required, "content": {"application/json": {"schema": answer(struct)}}}


def query(name: str, schema: Schema, description: str = "") -> Schema:
    param: Schema = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        param["description"] = description
    return param


def path_id(name: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": UUID}


SIGNED_IN: list[dict[str, list[str]]] = [{"bearer": []}, {"cookie": []}]
MAYBE_SIGNED_IN: list[dict[str, list[str]]] = [*SIGNED_IN, {}]
PUBLIC: list[dict[str, list[str]]] = [{}]


def op(
    summary: str,
    responses: dict[int, Schema],
    *,
    security: list[dict[str, list[str]]] = PUBLIC,
    errors: tuple[int, ...] = (),
    request: Schema | None = None,
    parameters: list[Schema] | None = None,
    tag: str = "api",
    limited: bool = True,
    stores: bool = True,
) -> Schema:
    """One operation. Every one may answer 400 (a query parameter holding a control character,
    web/params.py); bodies add 413/415; signed-in routes add 401 and the coming-soon 503; every
    rate-limited route adds 429; every route that reads a store (the rate limit reads Redis)
    adds 503 `unavailable`."""
    statuses = {*errors, 400}
    if stores:
        statuses.add(503)
    if request is not None:
        statuses |= {413, 415}
    if security is SIGNED_IN:
        statuses |= {401, 503}
    if security is MAYBE_SIGNED_IN:
        statuses |= {401}
    if limited:
        statuses.add(429)
    operation: Schema = {
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": {str(s): r for s, r in responses.items()}
        | {str(s): error(s) for s in sorted(statuses)},
    }
    if request is not None:
        operation["requestBody"] = request
    if parameters:
        operation["parameters"] = parameters
    return operation


def operation_id(method: str, path: str) -> str:
    """`get_api_positions_position_id`: stable, derived, unique per method and path."""
    words = re.findall(r"[a-z0-9]+", path.lower())
    return "_".join([method.lower(), *words])


POSITION_PATH = "/api/positions/{position_id}"
# NOTE: links let clients (and schemathesis' stateful phase) follow an open to the position.
POSITION_LINKS = {
    name: {
        "operationId": operation_id(method, POSITION_PATH),
        "parameters": {"position_id": "$response.body#/position/id"},
    }
    for name, method in (("GetPosition", "get"), ("SetLevels", "patch"), ("Close", "delete"))
}
LIMIT_100: Schema = {"type": "integer", "minimum": 1, "maximum": positions.MAX_PAGE}
LOGIN = {200: ok(answer(schemas.Session), "Signed in; both session cookies are set.")}

PATHS: dict[str, dict[str, Schema]] = {
    "/health": {
        "get": op(
            "The process is alive.",
            {200: ok(answer(schemas.Alive))},
            tag="operations",
            limited=False,
            stores=False,
        )
    },
    "/ready": {
        "get": op(
            "Postgres, Redis, the Lua scripts, the eviction policy and hot state are all fine.",
            {200: ok(answer(schemas.Readiness))},
            errors=(503,),
            tag="operations",
            limited=False,
        )
    },
    "/metrics": {
        "get": op(
            "Prometheus text of every worker of this web process; with METRICS_TOKEN set, only"
            " for `Authorization: Bearer <METRICS_TOKEN>` (else 401).",
            {
                200: {
                    "description": "Prometheus text exposition format 0.0.4.",
                    "content": {"text/plain": {"schema": STRING}},
                }
            },
            errors=(401,),
            tag="operations",
            limited=False,
            stores=False,
        )
    },
    "/console": {
        "get": op(
            "Outside production only: the live console page.",
            {200: {"description": "The page.", "content": {"text/html": {"schema": STRING}}}},
            tag="console",
        )
    },
    "/console/{name}": {
        "get": op(
            "Outside production only: the console's assets, and config.json (where ws listens).",
            {
                200: {
                    "description": "The asset.",
                    "content": {
                        "application/json": {"schema": answer(schemas.ConsoleConfig)},
                        "text/javascript": {"schema": STRING},
                        "text/css": {"schema": STRING},
                    },
                }
            },
            errors=(404,),
            parameters=[
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"enum": ["config.json", "console.js", "msgpack.js", "console.css"]},
                }
            ],
            tag="console",
        )
    },
    OPENAPI_PATH: {"get": op("This document.", {200: ok({"type": "object"})}, tag="operations")},
    "/api/auth/google": {
        "post": op(
            "Sign in with a Google ID token; a new user gets 422 `needsProfile` and a code.",
            {
                **LOGIN,
                422: ok(answer(schemas.NeedsProfile), "A new user: complete the profile."),
            },
            errors=(401,),
            request=body(GoogleSignInBody),
            tag="auth",
        )
    },
    "/api/auth/verify-otp": {
        "post": op(
            "Confirm the 6-digit code of a registration ticket.",
            {200: ok(answer(schemas.OtpVerified))},
            errors=(401,),
            request=body(VerifyOtpBody),
            tag="auth",
        )
    },
    "/api/auth/resend-otp": {
        "post": op(
            "Send a new code (not within 60 s of the last one).",
            {200: ok(answer(schemas.OtpSent))},
            errors=(401,),
            request=body(RegistrationTicketBody),
            tag="auth",
        )
    },
    "/api/auth/google/complete": {
        "post": op(
            "Complete the profile of a verified registration ticket: creates user and wallet.",
            {201: ok(answer(schemas.Session), "Registered and signed in.")},
            errors=(401, 403, 409),
            request=body(ProfileBody),
            tag="auth",
        )
    },
    "/api/auth/refresh": {
        "post": op(
            "Rotate the session: new access and refresh tokens; the old refresh token dies.",
            LOGIN,
            errors=(401,),
            request=body(RefreshTokenBody, required=False),
            tag="auth",
        )
    },
    "/api/auth/logout": {
        "post": op(
            "Revoke the presented tokens and clear the cookies; idempotent.",
            {204: {"description": "Signed out."}},
            request=body(RefreshTokenBody, required=False),
            tag="auth",
        )
    },
    "/api/auth/dev": {
        "post": op(
            "Outside production only: sign in as a synthetic user (absent in production).",
            LOGIN,
            request=body(DevLoginBody),
            tag="auth",
        )
    },
    "/api/auth/dev/batch": {
        "post": op(
            "Outside production only: up to 1,000 synthetic users with access tokens.",
            {200: ok(answer(schemas.DevUsers))},
            request=body(DevBatchBody),
            tag="auth",
        )
    },
    "/api/ws/token": {
        "post": op(
            "A 60-second token for the WebSocket process.",
            {200: ok(answer(schemas.SocketToken))},
            security=SIGNED_IN,
            tag="auth",
        )
    },
    "/api/me": {
        "get": op(
            "Who is signed in: `{loggedIn: false}` or the profile with wallet and referral code.",
            {200: ok({"oneOf": [answer(schemas.SignedOut), answer(schemas.SignedIn)]})},
            security=MAYBE_SIGNED_IN,
            tag="accounts",
        )
    },
    "/api/flags": {
        "get": op(
            "The public feature flags by name.",
            {200: ok({"type": "object", "additionalProperties": BOOL})},
            tag="accounts",
        )
    },
    "/api/admin/flags/{name}": {
        "put": op(
            "Admin: create or change a feature flag.",
            {200: ok(answer(schemas.Flag))},
            security=SIGNED_IN,
            errors=(403,),
            request=body(FlagBody),
            parameters=[
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]{0,63}$"},
                }
            ],
            tag="admin",
        )
    },
    "/api/districts": {
        "get": op(
            "The 14 Kerala districts.",
            {200: ok(answer(schemas.DistrictList))},
            tag="accounts",
        )
    },
    "/api/public/referral/validate": {
        "get": op(
            "Whether a referral code exists; always 200.",
            {200: ok(answer(schemas.ReferralValidity))},
            parameters=[query("code", QUERY_TEXT)],
            tag="accounts",
        )
    },
    "/api/referrals": {
        "get": op(
            "My referral code, invites, paid count and bonus total.",
            {200: ok(answer(schemas.Referrals))},
            security=SIGNED_IN,
            errors=(404,),
            tag="accounts",
        )
    },
    "/api/referrals/invites": {
        "post": op(
            "Create a named invite.",
            {201: ok(answer(schemas.Invite), "Created.")},
            security=SIGNED_IN,
            request=body(InviteBody),
            tag="accounts",
        )
    },
    "/api/instruments": {
        "get": op(
            "Instruments with every field and the current price.",
            {200: ok(answer(schemas.InstrumentList))},
            errors=(400,),
            parameters=[
                query("team", QUERY_TEXT),
                query("position", {"enum": ["GK", "DEF", "MID", "FWD"]}),
                query("fixtureId", UUID),
            ],
            tag="market",
        )
    },
    "/api/instruments/{instrument_id}": {
        "get": op(
            "One instrument.",
            {200: ok(answer(schemas.Instrument))},
            errors=(404,),
            parameters=[path_id("instrument_id")],
            tag="market",
        )
    },
    "/api/instruments/{instrument_id}/price-history": {
        "get": op(
            "Ticks from price_ticks, oldest first.",
            {200: ok(answer(schemas.Ticks))},
            errors=(400, 404),
            parameters=[
                path_id("instrument_id"),
                query("since", TIME),
                query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ],
            tag="market",
        )
    },
    "/api/matches": {
        "get": op(
            "Fixtures (upcoming, live, finished) with their instruments.",
            {200: ok(answer(schemas.MatchList))},
            errors=(400,),
            parameters=[query("status", {"enum": ["scheduled", "live", "finished"]})],
            tag="market",
        )
    },
    "/api/matches/{match_id}": {
        "get": op(
            "One fixture with its instruments.",
            {200: ok(answer(schemas.Match))},
            errors=(404,),
            parameters=[path_id("match_id")],
            tag="market",
        )
    },
    "/api/positions/open": {
        "post": op(
            "Open a position at the fill price of the curve; idempotent by clientRequestId.",
            {
                201: {
                    **ok(answer(schemas.TradeResult), "Opened (or the first result, replayed)."),
                    "links": POSITION_LINKS,
                }
            },
            security=SIGNED_IN,
            errors=(404, 409, 422),
            request=body(OpenPositionBody),
            tag="trading",
        )
    },
    "/api/positions": {
        "get": op(
            "My positions, newest first, cursor paging.",
            {200: ok(answer(schemas.PositionPage))},
            security=SIGNED_IN,
            errors=(400,),
            parameters=[
                query("status", {"enum": ["open", "closed"]}),
                query("limit", LIMIT_100),
                query("cursor", CURSOR),
            ],
            tag="trading",
        )
    },
    POSITION_PATH: {
        "get": op(
            "One of my positions.",
            {200: ok(answer(schemas.Position))},
            security=SIGNED_IN,
            errors=(404,),
            parameters=[path_id("position_id")],
            tag="trading",
        ),
        "patch": op(
            "Set (a number) or clear (null) the stop-loss and take-profit; absent keeps.",
            {200: ok(answer(schemas.Position))},
            security=SIGNED_IN,
            errors=(404, 409),
            request=body(LevelsBody),
            parameters=[path_id("position_id")],
            tag="trading",
        ),
        "delete": op(
            "Close at market; idempotent by clientRequestId.",
            {200: ok(answer(schemas.TradeResult), "Closed (or the first result, replayed).")},
            security=SIGNED_IN,
            errors=(400, 404, 409, 422),
            parameters=[
                path_id("position_id"),
                {
                    "name": "clientRequestId",
                    "in": "query",
                    "required": True,
                    "schema": CLIENT_REQUEST_ID,
                },
            ],
            tag="trading",
        ),
    },
    "/api/portfolio": {
        "get": op(
            "The wallet at current prices and the open positions.",
            {200: ok(answer(schemas.Portfolio))},
            security=SIGNED_IN,
            tag="trading",
        )
    },
    "/api/trades": {
        "get": op(
            "My fills (opens and closes), newest first.",
            {200: ok(answer(schemas.FillPage))},
            security=SIGNED_IN,
            errors=(400,),
            parameters=[query("limit", LIMIT_100), query("cursor", CURSOR)],
            tag="trading",
        )
    },
    "/api/leaderboard": {
        "get": op(
            "The overall or a district board; `me` when a valid access token is presented.",
            {200: ok(answer(schemas.Leaderboard))},
            security=MAYBE_SIGNED_IN,
            errors=(400,),
            parameters=[
                query("scope", {"enum": ["overall", "district"]}),
                query(
                    "districtId",
                    DISTRICT_ID,
                    "Required with scope=district and refused (400) without it.",
                ),
                query("limit", {**LIMIT_100, "maximum": leaderboard.MAX_LIMIT}),
                query(
                    "offset", {"type": "integer", "minimum": 0, "maximum": leaderboard.MAX_OFFSET}
                ),
            ],
            tag="market",
        )
    },
    "/api/admin/settings": {
        "get": op(
            "Admin: the operator's settings (scoring weights).",
            {200: ok(answer(schemas.OperatorSettings))},
            security=SIGNED_IN,
            errors=(403,),
            tag="admin",
        ),
        "put": op(
            "Admin: replace the scoring weights.",
            {200: ok(answer(schemas.OperatorSettings))},
            security=SIGNED_IN,
            errors=(403,),
            request=body(SettingsBody),
            tag="admin",
        ),
    },
    "/api/admin/instruments/{instrument_id}": {
        "post": op(
            "Admin: activate or deactivate an instrument, set its kMod (a kMod change emits a"
            " tick).",
            {200: ok(answer(schemas.Instrument), "The instrument after the change.")},
            security=SIGNED_IN,
            errors=(403, 404),
            request=body(AdminInstrumentBody),
            parameters=[path_id("instrument_id")],
            tag="admin",
        )
    },
    "/api/admin/replay": {
        "post": op(
            "Admin: enqueue one user's margin replay.",
            {202: ok(answer(schemas.ReplayEnqueued), "Enqueued.")},
            security=SIGNED_IN,
            errors=(403, 404),
            request=body(ReplayBody),
            tag="admin",
        )
    },
}


# APPSEC: in production the development logins and the console (which uses them) are not
# routed, so not documented either.
DEV_ONLY_PATHS = frozenset({"/api/auth/dev", "/api/auth/dev/batch", "/console", "/console/{name}"})


BODIES: tuple[type[schemas.Body], ...] = (
    GoogleSignInBody,
    VerifyOtpBody,
    RegistrationTicketBody,
    ProfileBody,
    RefreshTokenBody,
    DevLoginBody,
    DevBatchBody,
    FlagBody,
    InviteBody,
    OpenPositionBody,
    LevelsBody,
    SettingsBody,
    AdminInstrumentBody,
    ReplayBody,
)


def struct_schemas() -> dict[str, Schema]:
    """The schemas of the request bodies and the answers, generated from their Structs."""
    _, components = msgspec.json.schema_components(
        (*schemas.ANSWERS, *BODIES), ref_template=REF_TEMPLATE
    )
    return components


@cache
def document(production: bool) -> dict[str, Any]:
    paths = {
        path: {verb: {"operationId": operation_id(verb, path), **o} for verb, o in ops.items()}
        for path, ops in PATHS.items()
        if not (production and path in DEV_ONLY_PATHS)
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "FTL (Football Trade League) API",
            "version": "1",
            "description": "Errors are `{error: {code, message, details}}` (SPEC §3). Rate limits"
            " per client IP: 200 requests/min overall plus per-route limits; 429 carries"
            " Retry-After.",
        },
        "paths": paths,
        "components": {
            "schemas": struct_schemas() | SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "ftl_access"},
            },
        },
    }


class OpenApi:
    """GET /api/openapi.json (public)."""

    def __init__(self, production: bool) -> None:
        self.production = production

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = document(self.production)


def add_routes(app: falcon.asgi.App[Any, Any], services: Services) -> None:
    app.add_route(OPENAPI_PATH, OpenApi(services.settings.is_production))
