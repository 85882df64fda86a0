"""Every request body and answer of the HTTP API, declared once as a typed msgspec Struct
(decision 0135). The answers that ftl/ builds are declared in the ftl module that builds them
(ftl never imports web) and re-exported here (`X as X`), so this module names the whole contract.

From these classes come the decoding and validation of a body (web/body.py turns msgspec's
refusals into our `validation_error` / `unknown_field` envelopes naming the field), and the
schemas of the OpenAPI document (web/openapi.py assembles the paths around them). Field
names are the JSON's camelCase, renamed from Python's snake_case. Every body refuses unknown
fields, so a typo fails loudly.

Where a rule is not a JSON Schema constraint (a price in steps of a cent, human text normalised
before its length is judged, a token checked by its issuer), the field is typed as loosely as
that rule needs, the document states the rule, and ftl/ judges it with the same error contract.

NOTE: one module over the usual length on purpose: it is the whole HTTP contract, nearly all
declarations, and reading it in one place is its point.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, UnsetType

from ftl.accounts import referrals, registration, users
from ftl.accounts.referrals import Invite as Invite
from ftl.accounts.referrals import ReferralCode
from ftl.accounts.referrals import Referrals as Referrals
from ftl.accounts.registration import NeedsProfile as NeedsProfile
from ftl.accounts.sessions import Session as Session
from ftl.accounts.users import District as District
from ftl.accounts.users import User as User
from ftl.core.answers import Answer, DistrictId, Id, Time
from ftl.core.errors import InvalidInput, invalid
from ftl.market import rules
from ftl.market.instruments import K_MOD_MAX_MICROS, InstrumentChange
from ftl.market.leaderboard import Leaderboard as Leaderboard
from ftl.market.matches import Instrument as Instrument
from ftl.market.matches import Match as Match
from ftl.market.quotes import Tick as Tick
from ftl.store.auth.google import NONCE_MAX_CHARS, NONCE_MIN_CHARS
from ftl.store.auth.tokens import TTL_S, TokenType
from ftl.store.flags import Flag as Flag
from ftl.trading import trades
from ftl.trading.portfolio import MeWallet as MeWallet
from ftl.trading.portfolio import OpenPosition as OpenPosition
from ftl.trading.portfolio import Portfolio as Portfolio
from ftl.trading.portfolio import Wallet as Wallet
from ftl.trading.positions import Fill as Fill
from ftl.trading.positions import FillPage as FillPage
from ftl.trading.positions import Position as Position
from ftl.trading.positions import PositionPage as PositionPage

Schema = dict[str, Any]

# --- field types, each defined once ---------------------------------------------------------

STOP_LOSS_SIDE = (
    "Must be on the losing side of the current price: below it for a long, above it for a"
    " short (400 `validation_error` otherwise)."
)
TAKE_PROFIT_SIDE = (
    "Must be on the winning side of the current price: above it for a long, below it for a"
    " short (400 `validation_error` otherwise)."
)
# NOTE: msgspec's multiple_of on a float is a float modulo (0.29 % 0.01 != 0), so the step is
# only stated here and judged exactly in ftl/trading/trades.py (`cents`, `whole`).
Price = Annotated[
    float,
    Meta(ge=0.01, le=float(trades.MAX_PRICE), extra_json_schema={"multipleOf": 0.01}),
]
LotSize = Annotated[
    float,
    Meta(ge=0.01, le=float(trades.MAX_LOTS), extra_json_schema={"multipleOf": 0.01}),
]
SlippageTolerance = Annotated[
    float,
    Meta(
        ge=0,
        le=float(trades.MAX_SLIPPAGE_TOLERANCE),
        description="A fraction of the client price, not a percent: 0.01 is 1 %, the default;"
        " finer than 0.000001 rounds down.",
    ),
]
ClientRequestId = Annotated[str, Meta(pattern=trades.CLIENT_REQUEST_ID_PATTERN)]
CLIENT_REQUEST_ID = re.compile(trades.CLIENT_REQUEST_ID_PATTERN)
KMod = Annotated[
    float,
    Meta(ge=0, le=K_MOD_MAX_MICROS / 1_000_000, extra_json_schema={"multipleOf": 0.000001}),
]
# APPSEC: no query parameter holds a control character (web/params.py refuses them).
QUERY_TEXT_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
# What ftl/core/text.py refuses in a name (decision 0075); the pattern states the control
# characters.
HUMAN_TEXT_RULES = (
    "Stored NFC with runs of whitespace as one space and none at either end, and that must"
    " leave 1 to maxLength characters. Refused: control and format characters (RTL override,"
    " zero-width space, BOM), lone surrogates, unassigned and private-use code points, a"
    " combining mark starting a word, more than 4 combining marks on one letter; ZWJ and ZWNJ"
    " only between two letters."
)


def human_text_schema(max_chars: int) -> Schema:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_chars,
        "pattern": QUERY_TEXT_PATTERN,
        "description": HUMAN_TEXT_RULES,
    }


# NOTE: a field that ftl/ judges itself (its length counts after normalising, its token is the
# issuer's to check) takes any JSON here; the document states its rule.
TICKET: Schema = {"type": "string", "minLength": 1}
Ticket = Annotated[Any, Meta(extra_json_schema=TICKET)]
Nonce = Annotated[
    Any,
    Meta(
        extra_json_schema={
            "type": "string",
            "minLength": NONCE_MIN_CHARS,
            "maxLength": NONCE_MAX_CHARS,
            "description": "The nonce the ID token was minted with; each one signs in once.",
        }
    ),
]
Otp = Annotated[Any, Meta(extra_json_schema={"type": "string"})]
PersonName = Annotated[Any, Meta(extra_json_schema=human_text_schema(registration.NAME_MAX_CHARS))]
PersonNameOrEmpty = Annotated[
    Any,
    Meta(
        extra_json_schema={
            "anyOf": [
                {
                    **human_text_schema(registration.NAME_MAX_CHARS),
                    "minLength": 0,
                    "description": "Empty means none.",
                },
                {"type": "null"},
            ]
        }
    ),
]
Age = Annotated[
    Any,
    Meta(
        extra_json_schema={
            "type": "integer",
            "minimum": registration.MIN_AGE,
            "maximum": registration.MAX_AGE,
        }
    ),
]
Phone = Annotated[
    Any, Meta(extra_json_schema={"type": "string", "pattern": f"^{registration.PHONE.pattern}$"})
]
AnyDistrictId = Annotated[Any, Meta(extra_json_schema=msgspec.json.schema(DistrictId))]
AnyReferralCode = Annotated[
    Any, Meta(extra_json_schema={"anyOf": [msgspec.json.schema(ReferralCode), {"type": "null"}]})
]
AnyInviteId = Annotated[
    Any, Meta(extra_json_schema={"anyOf": [{"type": "string", "format": "uuid"}, {"type": "null"}]})
]
DisplayName = Annotated[
    Any, Meta(extra_json_schema=human_text_schema(users.DISPLAY_NAME_MAX_CHARS))
]
BatchPrefix = Annotated[
    Any, Meta(extra_json_schema=human_text_schema(users.DEV_BATCH_PREFIX_MAX_CHARS))
]
InviteLabel = Annotated[
    Any, Meta(extra_json_schema=human_text_schema(referrals.INVITE_LABEL_MAX_CHARS))
]
Since = Annotated[
    Any,
    Meta(
        extra_json_schema={"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}
    ),
]
ScoringWeights = Annotated[
    Any, Meta(extra_json_schema={"$ref": "#/components/schemas/ScoringWeights"})
]


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """A request body: a closed JSON object."""


# --- trading --------------------------------------------------------------------------------


class OpenPositionBody(Body):
    instrument_id: UUID
    direction: Literal["long", "short"]
    lot_size: LotSize
    client_request_id: ClientRequestId
    client_price: Price
    slippage_tolerance_pct: SlippageTolerance | None = None
    stop_loss: Annotated[Price | None, Meta(description=STOP_LOSS_SIDE)] = None
    take_profit: Annotated[Price | None, Meta(description=TAKE_PROFIT_SIDE)] = None

    def order(self) -> trades.OpenOrder:
        return trades.OpenOrder.of(
            instrument_id=self.instrument_id,
            direction=rules.LONG if self.direction == "long" else rules.SHORT,
            lot_size=self.lot_size,
            client_request_id=self.client_request_id,
            client_price=self.client_price,
            slippage_tolerance=self.slippage_tolerance_pct,
            stop_loss=self.stop_loss,
            take_profit=self.take_profit,
        )


class LevelsBody(Body):
    """Absent keeps a level, null clears it, a number sets it."""

    stop_loss: Annotated[Price | None, Meta(description=STOP_LOSS_SIDE)] | UnsetType = UNSET
    take_profit: Annotated[Price | None, Meta(description=TAKE_PROFIT_SIDE)] | UnsetType = UNSET

    def levels(self) -> trades.Levels:
        return trades.Levels(
            stop_loss=_level(self.stop_loss, "stopLoss"),
            take_profit=_level(self.take_profit, "takeProfit"),
        )


def _level(value: float | UnsetType | None, field: str) -> int | trades.Keep | None:
    if value is UNSET:
        return trades.KEEP
    return None if value is None else trades.cents(value, field)


# --- accounts and sign-in -------------------------------------------------------------------


class GoogleSignInBody(Body):
    id_token: Ticket
    nonce: Nonce


class RegistrationTicketBody(Body):
    # NOTE: the ticket is judged before anything else (401 when missing or dead), so no field
    # of a ticket's body is required by the decoder: a body without one is the 401 it was.

    registration_ticket: Ticket = UNSET


class VerifyOtpBody(RegistrationTicketBody):
    otp: Otp = UNSET


class ProfileBody(RegistrationTicketBody):
    """The new user's profile."""

    # NOTE: judged field by field by ftl/accounts/registration.py (Profile.parse), which owns
    # the rules.

    first_name: PersonName = UNSET
    last_name: PersonNameOrEmpty = UNSET
    age: Age = UNSET
    phone: Phone = UNSET
    district_id: AnyDistrictId = UNSET
    referral_code: AnyReferralCode = UNSET
    invite_id: AnyInviteId = UNSET

    def fields(self) -> dict[str, Any]:
        """The body as the client sent it (absent fields stay absent)."""
        fields: dict[str, Any] = msgspec.to_builtins(self)
        return fields


class RefreshTokenBody(Body):
    """The refresh token, when not sent in its cookie."""

    refresh_token: str | UnsetType = UNSET


class DevLoginBody(Body):
    display_name: DisplayName


class DevBatchBody(Body):
    # NOTE: a float, so that 3.0 counts as 3 (JSON Schema's integers); the resource judges it whole.
    count: Annotated[
        float, Meta(ge=1, le=users.DEV_BATCH_MAX, extra_json_schema={"type": "integer"})
    ]
    prefix: BatchPrefix = UNSET


class FlagBody(Body):
    """Absent isPublic keeps the flag's visibility; null is not a boolean."""

    enabled: bool
    is_public: bool | UnsetType = UNSET


class InviteBody(Body):
    label: InviteLabel


# --- administration -------------------------------------------------------------------------


class AdminInstrumentBody(Body):
    """Absent leaves a field as it is; null is neither a boolean nor a number."""

    is_active: bool | UnsetType = UNSET
    k_mod: KMod | UnsetType = UNSET

    def change(self) -> InstrumentChange:
        active = None if self.is_active is UNSET else self.is_active
        k_mod = None if self.k_mod is UNSET else self.k_mod
        if active is None and k_mod is None:
            raise InvalidInput(
                "validation_error", "Give isActive, kMod or both.", {"field": "isActive"}
            )
        micros = None if k_mod is None else trades.whole(k_mod, 1_000_000, "kMod", "0.000001")
        return InstrumentChange(active, micros)


class ReplayBody(Body):
    user_id: UUID
    since: Since = None


class SettingsBody(Body):
    """The scoring weights, replaced whole."""

    # NOTE: the shape of the weights is judged by ftl/market/weights.py, field by field.

    scoring_weights: ScoringWeights


def client_request_id(value: str | None) -> str:
    """A close's clientRequestId query parameter, by the pattern of the open's field.

    PERF: a compiled pattern, not msgspec.convert (which resolves the type on every call)."""
    if value is None or not CLIENT_REQUEST_ID.match(value):
        raise invalid("clientRequestId", "must be 1 to 64 characters of A-Z a-z 0-9 _ . : -")
    return value


# --- answers --------------------------------------------------------------------------------
# Every answer is built as one of these Structs and encoded by msgspec (web/app.py), and the
# document's response schemas are generated from the same classes (decision 0135). An answer
# that ftl/ builds is declared in the ftl module that builds it (ftl may not import web) and
# named here for the document; an answer only the web edge builds is declared here. NOTE: the
# open, close and level answers are written by the Lua scripts in the shape of TradeResult and
# Position (PERF: one round trip); tests/integration/test_openapi.py holds every real answer to
# its schema, and every object is closed, so a field the Lua adds fails that test.


class ErrorDetail(Answer):
    code: Annotated[str, Meta(pattern="^[a-z][a-z0-9_]*$")]
    message: str
    details: dict[str, Any]


class Error(Answer):
    """Every refusal (SPEC §3)."""

    error: ErrorDetail


class TradeResult(Answer):
    """The open and close answer, written by lua/lib/engine.lua."""

    position: Position
    wallet: Wallet
    replayed: bool


class Alive(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    status: Literal["ready"]
    checks: Annotated[
        dict[str, Literal["ok"]],
        Meta(
            description='Each readiness check: "ok" (a failing one makes the answer a 503 that'
            " names the failing parts and nothing more)."
        ),
    ]


class ConsoleConfig(Answer):
    ws_url: str


class OtpVerified(Answer):
    verified: Literal[True]


class OtpSent(Answer):
    sent: Literal[True]


class DevUser(Answer):
    user: User
    access_token: str


class DevUsers(Answer):
    users: list[DevUser]
    expires_in: int


class SocketToken(Answer):
    token: str
    expires_in: Annotated[int, Meta(extra_json_schema={"const": TTL_S[TokenType.WS]})]


class SignedOut(Answer):
    logged_in: Literal[False]


class SignedIn(Answer):
    logged_in: Literal[True]
    user: User
    wallet: MeWallet
    referral_code: str


class DistrictList(Answer):
    districts: list[District]


class ReferralValidity(Answer):
    valid: bool


class InstrumentList(Answer):
    instruments: list[Instrument]


class Ticks(Answer):
    ticks: list[Tick]


class MatchList(Answer):
    matches: list[Match]


class OperatorSettings(Answer):
    scoring_weights: ScoringWeights


class ReplayEnqueued(Answer):
    enqueued: Literal[True]
    user_id: Id
    since: Time | None


ANSWERS: tuple[type[msgspec.Struct], ...] = (
    Error,
    User,
    Session,
    NeedsProfile,
    Wallet,
    MeWallet,
    Position,
    OpenPosition,
    TradeResult,
    PositionPage,
    Fill,
    FillPage,
    Portfolio,
    Instrument,
    Tick,
    Match,
    Leaderboard,
    Invite,
    Referrals,
    Flag,
    Alive,
    Readiness,
    ConsoleConfig,
    OtpVerified,
    OtpSent,
    DevUsers,
    SocketToken,
    SignedOut,
    SignedIn,
    DistrictList,
    ReferralValidity,
    InstrumentList,
    Ticks,
    MatchList,
    OperatorSettings,
    ReplayEnqueued,
)
