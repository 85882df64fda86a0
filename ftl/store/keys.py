"""Every Redis key and pub/sub channel name, in one place.

Money in Redis is integer cents, lots are integer hundredths of a lot ("centilots") and `kMod` is
integer micro-points per lot, so the Lua scripts compute exactly with doubles (all < 2**53).
"""

from __future__ import annotations

from uuid import UUID

INSTRUMENT_IDX = "instrument_idx"  # hash: idx -> instrument id
INSTRUMENT_IDS = "instruments"  # set of every instrument id held in hot state


def instrument(instrument_id: UUID | str) -> str:
    """Hash of one instrument's hot state (fields: see ftl/market/instruments.py)."""
    return f"instrument:{instrument_id}"


def price_channel(instrument_id: UUID | str) -> str:
    """Pub/sub: every tick of the instrument, as tick JSON (ftl/store/ticks.py)."""
    return f"price:{instrument_id}"


def portfolio_channel(user_id: UUID | str) -> str:
    """Pub/sub: the user's portfolio frames, already the JSON text the WebSocket client receives:
    {"type": "portfolio", "event": ..., "position": {...}?, "wallet": {...}} (SPEC §7)."""
    return f"portfolio:{user_id}"


PRICE_CHANNEL_PATTERN = "price:*"
PORTFOLIO_CHANNEL_PATTERN = "portfolio:*"
USER_RECONNECT_CHANNEL = "user:reconnect"  # pub/sub: a user id, on his first WebSocket connect


def tick_log(instrument_id: UUID | str) -> str:
    """Sorted set of the instrument's recent ticks: score = seq, member = tick JSON
    (ftl/store/ticks.py), capped at TICK_LOG_CAP members; serves WebSocket `lastSequence` replay
    and the margin replay."""
    return f"ticklog:{instrument_id}"


TICK_LOG_CAP = 2_000  # ticks kept per instrument (~66 min of a live match at one tick per 2 s)


def revoked_jti(jti: str) -> str:
    """Set (with a TTL until the token's own expiry) when a token is revoked at logout."""
    return f"jti_block:{jti}"


def last_seen(user_id: UUID | str) -> str:
    return f"last_seen:{user_id}"


def refresh_family(family: str) -> str:
    """String: the jti of the one live refresh token of a session family (TTL: the refresh
    lifetime). Missing means the family ended (logout, reuse detected, or expired)."""
    return f"refresh_family:{family}"


def google_nonce(nonce_digest: str) -> str:
    """Set NX with a 300 s TTL when a Google sign-in uses the nonce: single use."""
    return f"google_nonce:{nonce_digest}"


def registration_otp(ticket_jti: str) -> str:
    """Hash of a registration ticket's email code: `hash` (SHA-256 hex of ticket jti and code),
    `attemptsLeft`, `verified` ("0"/"1"); TTL 300 s from the last code sent."""
    return f"otp:{ticket_jti}"


def otp_cooldown(ticket_jti: str) -> str:
    """Set NX with a 60 s TTL when a code is sent: the resend cooldown."""
    return f"otp_cooldown:{ticket_jti}"


def rate_limit(scope: str, client: str) -> str:
    """Counter of one fixed window (TTL = the window) of a rate limit; scope `ip` or a route."""
    return f"rate:{scope}:{client}"


FEATURE_FLAGS = "feature_flags"  # hash: flag name -> "1" / "0", the hot copy of feature_flags


# Trading hot state. NOTE: lua/lib/engine.lua derives the same names;
# tests/unit/test_trading_keys.py keeps the two in step.


def wallet(user_id: UUID | str) -> str:
    """Hash of the user's wallet hot state (fields: see ftl/trading/wallets.py)."""
    return f"wallet:{user_id}"


def position(position_id: UUID | str) -> str:
    """Hash of one position (fields: see ftl/trading/positions.py); kept until the flusher
    persisted it."""
    return f"position:{position_id}"


def open_positions(user_id: UUID | str) -> str:
    """Set of the user's open position ids."""
    return f"positions:{user_id}"


def exposure(user_id: UUID | str) -> str:
    """Hash of the user's net open lots per instrument, so equity needs no scan of positions:
    field instrumentId = Σ lotsCentis × direction (absent when 0). Unrealized PnL in cents =
    Σ price × lots − the wallet's costCents (Σ entryCents × lotsCentis × direction)."""
    return f"exposure:{user_id}"


def stops_below(instrument_id: UUID | str) -> str:
    """Sorted set of levels hit when the price falls to them (long stop-loss, short take-profit):
    member = position id, score = level in cents."""
    return f"stops:below:{instrument_id}"


def stops_above(instrument_id: UUID | str) -> str:
    """Sorted set of levels hit when the price rises to them (long take-profit, short stop-loss)."""
    return f"stops:above:{instrument_id}"


def idempotency(user_id: UUID | str, client_request_id: str) -> str:
    """The first result of an open or close, by the user's clientRequestId (24 h)."""
    return f"idem:{user_id}:{client_request_id}"


IDEMPOTENCY_TTL_S = 24 * 3600

OUTBOX = "outbox"  # stream: what the flusher must persist, written by the same Lua call
OUTBOX_GROUP = "flusher"  # consumer group of every flusher process

BOARD_OVERALL = "board:overall"  # sorted set: score = realized PnL cents (see board_member)
BOARD_ARRIVALS = "board:arrivals"  # counter ordering equal scores by arrival


def board_district(district_id: int | str) -> str:
    return f"board:district:{district_id}"


def referral_paid(referral_id: UUID | str) -> str:
    """Set once the referral bonus of this referral has been credited (exactly-once marker)."""
    return f"referral_paid:{referral_id}"


def lease(name: str) -> str:
    """A lease (SET NX PX) that lets one process at a time run a periodic job."""
    return f"lease:{name}"


# hash: the Sportmonks circuit breaker every poller shares (fields: ftl/sportmonks/breaker.py)
SPORTMONKS_BREAKER = "sportmonks:breaker"


def spent_ws_token(jti: str) -> str:
    """Set (for the token's remaining life) when a ws token opens a connection: one use only."""
    return f"ws_token_spent:{jti}"


def ws_connections(user_id: UUID | str) -> str:
    """Sorted set of the user's open WebSocket connections on every replica: member = connection
    id, score = Redis time (ms) its lease runs out; renewed while open, so a crashed replica's
    entries lapse (lua/ws_admit.lua, web/ws/limits.py)."""
    return f"ws_connections:{user_id}"


FLUSH_LAG_SAMPLES = "flush:lag_ms"  # list: the worst tick-to-commit lag of recent batches, ms
FLUSH_LAG_SAMPLES_CAP = 10_000


# Margin replay (ftl/trading/margin/, lua/position_system_close.lua).


def holders(instrument_id: UUID | str) -> str:
    """Set of the user ids with an open position on the instrument (a hedged one with no net
    lots included), kept by lua/lib/engine.lua from `held` (docs/decisions/0094)."""
    return f"holders:{instrument_id}"


def held(user_id: UUID | str) -> str:
    """Hash of how many of the user's positions are open on each instrument: field instrumentId
    = count (absent when 0). The holders index follows it: he joins an instrument's index when
    his count leaves 0 and leaves it when the count returns to 0, with no scan of his positions."""
    return f"held:{user_id}"


def margin_watermark(user_id: UUID | str) -> str:
    """Hash where the user's margin replay stopped: `{instrumentId}` = last seq judged, `below` =
    "1" while his level is under 100 % (one warning per crossing), `v` = version (compare-and-set
    by lua/position_system_close.lua)."""
    return f"margin:watermark:{user_id}"


MARGIN_WASHOUT_FOLLOW_UP = "margin:followup:washouts"
"""Set while a follow-up pass is owed because washouts moved prices (sent at once; decisions
0044, 0165); the pass deletes it, with MARGIN_WASHOUT_FOLLOW_UP_INSTRUMENTS, before its cut."""

MARGIN_WASHOUT_FOLLOW_UP_INSTRUMENTS = "margin:followup:washouts:instruments"
"""The instruments washouts moved since the owed follow-up pass was asked for (a set of ids)."""

MARGIN_TRADE_FOLLOW_UP = "margin:followup:trades"
"""Set while a trade pass is owed (the flusher's ask, sent a second late; docs/decisions/0047,
0160); the pass deletes it, with MARGIN_TRADE_FOLLOW_UP_INSTRUMENTS, before reading its cut."""

MARGIN_TRADE_FOLLOW_UP_INSTRUMENTS = "margin:followup:trades:instruments"
"""The instruments trades moved since the owed trade pass was asked for (a set of ids)."""


def margin_box(user_id: UUID | str) -> str:
    """String: the user's safe box (how far prices may move from where his margin replay ended
    before it could raise an event), for the wallet it was made for: "fingerprint|below:slack:
    headroom|instrumentId=seq:priceCents:netLotsCentis;..." (ftl/trading/margin/replay.py SafeBox,
    docs/decisions/0046). Stored, with its bounds indexed (margin_floor, margin_ceiling,
    margin_since), only while it speaks for his wallet (lua/margin_boxes_save.lua, 0166)."""
    return f"margin:box:{user_id}"


MARGIN_UNBOXED = "margin:unboxed"
"""Set: users whose safe box does not speak for their wallet: every wallet write adds its user
(lua/lib/engine.lua), storing a box made for the wallet as it is takes him out
(lua/margin_boxes_save.lua). Every after-tick pass evaluates them (docs/decisions/0166)."""

MARGIN_INDEXED = "margin:indexed"
"""Set once every holder was put in MARGIN_UNBOXED for a new index (a new Redis, `ftl recover`)."""


def margin_checked(instrument_id: UUID | str) -> str:
    """String: the seq up to which every box indexed on the instrument was judged (its ticks
    after it are the next pass's; docs/decisions/0166)."""
    return f"margin:checked:{instrument_id}"


def margin_floor(instrument_id: UUID | str) -> str:
    """Zset: user -> the lowest price of the instrument his safe box allows (SafeBox.bounds)."""
    return f"margin:floor:{instrument_id}"


def margin_ceiling(instrument_id: UUID | str) -> str:
    """Zset: user -> the highest price of the instrument his safe box allows (SafeBox.bounds)."""
    return f"margin:ceiling:{instrument_id}"


def margin_since(instrument_id: UUID | str) -> str:
    """Zset: user -> his safe box's seq on the instrument (it lapses BOX_MAX_TICKS later)."""
    return f"margin:since:{instrument_id}"


MARGIN_INDEX_PREFIXES = tuple(
    name("") for name in (margin_box, margin_checked, margin_floor, margin_ceiling, margin_since)
)
"""Every key of the safe boxes and their index, by prefix (`ftl recover` clears them)."""

MARGIN_OUTBOX = "margin_outbox"  # stream: warning and washout events bound for margin_events
MARGIN_BACKSTOP_LEASE = "margin-backstop"  # the lease name of the 5-minute sweep


PRICES = "prices"
"""Hash: instrument id -> price in cents as of its last tick, written by every tick (Lua) so the
scripts price a whole portfolio in one read. NOTE: every price change is a tick (SPEC §1.3): a
change of liveBase, kMod or netLots that emits no tick would leave this stale."""

# JSON list of the fixture ids the last poll saw live (TTL 120 s): the clock polls every 2 s while
# it is non-empty and every 60 s otherwise.
LIVE_FIXTURES = "sportmonks:live_fixtures"
# hash: what Sportmonks last said of our call budget (ftl/sportmonks/budget.py): remaining,
# resetsAtMs, and pausedUntilMs after a 429 (no poller calls before it).
SPORTMONKS_RATE_LIMIT = "sportmonks:rate_limit"
