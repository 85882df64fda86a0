"""`ftl bots`: synthetic traders that keep the development market moving (never in production).

Each bot is a synthetic user (dev sign-in, `users.is_synthetic`; decision 0065) that trades
through the public HTTP API exactly as a person would, so every rule, limit and refusal applies
to it and its trades reach the market as ordinary `trade` ticks. A bot holds at most
MAX_OPEN_PER_BOT small positions on the instruments of the live matches (any tradable instrument
while no match is live), opening and closing them at a modest overall rate.

Refusals are part of the game, not failures: a 409 (frozen at full time, margin, slippage, a
position the system already closed) is counted and the bot moves on. A request that got no answer
is sent again with the same `clientRequestId`, so the retry cannot trade twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger("ftl.ops.bots")

BOT_PREFIX = "bot-"
MAX_BOTS = 1_000  # what one dev batch sign-in creates
MAX_OPEN_PER_BOT = 3
CLOSE_CHANCE = 0.4  # share of a bot's turns that close a position while it holds any
# NOTE: small enough that MAX_OPEN_PER_BOT positions at the 500.00 base-price cap fit a new wallet.
LOT_SIZES = (0.1, 0.2, 0.3, 0.5)
# NOTE: the widest tolerance the API takes: a bot's quote is up to MARKET_REFRESH_S old.
SLIPPAGE_TOLERANCE_PCT = 0.05
MARKET_REFRESH_S = 5.0
ATTEMPTS = 3  # per request: transport errors, 5xx, 429 and an expired token are tried again
RETRY_PAUSE_S = 1.0
API_WAIT_S = 120.0  # how long the bots wait for the API to come up (make run starts both)
REQUEST_TIMEOUT_S = 10.0
REPORT_EVERY_S = 30.0
# NOTE: a close of a position the system already closed (full time, washout, stop-loss).
GONE_CODES = frozenset({"position_closed", "not_found"})
STALE_MARKET_CODES = frozenset({"instrument_frozen", "instrument_inactive"})


class BotError(Exception):
    """The bots cannot trade at all (no API, no dev sign-in); the message is one line."""


@dataclass
class Bot:
    user_id: str
    name: str
    token: str
    positions: list[str] = field(default_factory=list)  # ids of its open positions


@dataclass
class BotReport:
    opened: int = 0
    closed: int = 0
    replayed: int = 0  # answers to a retried request that had already been applied
    refused: Counter[str] = field(default_factory=Counter)  # error code -> count
    failures: int = 0  # transport errors and 5xx answers

    def summary(self) -> str:
        refused = ", ".join(f"{code} {n}" for code, n in sorted(self.refused.items()))
        return (
            f"opened {self.opened}, closed {self.closed}, replayed {self.replayed},"
            f" refused {sum(self.refused.values())}{f' ({refused})' if refused else ''},"
            f" failures {self.failures}"
        )


def _error_code(reply: httpx.Response) -> str:
    try:
        code = reply.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return f"http_{reply.status_code}"
    return str(code)


class Traders:
    """`count` bots trading through the API behind `client` (its base_url is the web process)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        count: int,
        *,
        rng: random.Random | None = None,
        prefix: str = BOT_PREFIX,
    ) -> None:
        if not 1 <= count <= MAX_BOTS:
            raise ValueError(f"count must be from 1 to {MAX_BOTS}")
        self.client = client
        self.count = count
        self.prefix = prefix
        self.rng = rng or random.Random()
        self.bots: list[Bot] = []
        self.market: list[dict[str, Any]] = []  # tradable instruments as the API lists them
        self.market_read_at = float("-inf")
        self.report = BotReport()

    async def wait_for_api(self, limit_s: float = API_WAIT_S) -> None:
        deadline = time.monotonic() + limit_s
        while True:
            try:
                if (await self.client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BotError(f"no API at {self.client.base_url} after {limit_s:g} s")
            await asyncio.sleep(RETRY_PAUSE_S)

    async def sign_in(self) -> None:
        """Sign every bot in (again: access tokens last 15 minutes), keeping what each holds."""
        body = {"count": self.count, "prefix": self.prefix}
        reply = await self._call("POST", "/api/auth/dev/batch", json=body)
        if reply is None or reply.status_code != 200:
            why = "no answer" if reply is None else _error_code(reply)
            raise BotError(f"the dev sign-in was refused ({why}); is ENV=production?")
        held = {bot.user_id: bot for bot in self.bots}
        for entry in reply.json()["users"]:
            user = entry["user"]
            if user["id"] in held:
                held[user["id"]].token = entry["accessToken"]
            else:
                bot = Bot(user["id"], user["displayName"], entry["accessToken"])
                self.bots.append(bot)
                await self._load_positions(bot)

    async def _load_positions(self, bot: Bot) -> None:
        """A bot signed in again after a restart still holds its earlier positions."""
        reply = await self._call(
            "GET", "/api/positions", bot, params={"status": "open", "limit": MAX_OPEN_PER_BOT * 10}
        )
        if reply is not None and reply.status_code == 200:
            bot.positions = [p["id"] for p in reply.json()["positions"]]

    async def read_market(self) -> None:
        """The instruments of the live matches, or every tradable one while none is live."""
        self.market_read_at = time.monotonic()
        reply = await self._call("GET", "/api/matches", params={"status": "live"})
        if reply is None or reply.status_code != 200:
            return
        listed = [i for match in reply.json()["matches"] for i in match["instruments"]]
        if not listed:
            reply = await self._call("GET", "/api/instruments")
            if reply is None or reply.status_code != 200:
                return
            listed = reply.json()["instruments"]
        self.market = [i for i in listed if i["isActive"] and not i["frozen"]]

    async def turn(self) -> None:
        """One move of one bot: close one of its positions or open a new one."""
        if time.monotonic() - self.market_read_at >= MARKET_REFRESH_S:
            await self.read_market()
        bot = self.rng.choice(self.bots)
        closing = bot.positions and (
            len(bot.positions) >= MAX_OPEN_PER_BOT
            or not self.market
            or self.rng.random() < CLOSE_CHANCE
        )
        if closing:
            await self.close(bot, self.rng.choice(bot.positions))
        elif self.market:
            await self.open(bot, self.rng.choice(self.market))

    async def open(self, bot: Bot, instrument: dict[str, Any]) -> None:
        body = {
            "instrumentId": instrument["id"],
            "direction": self.rng.choice(("long", "short")),
            "lotSize": self.rng.choice(LOT_SIZES),
            "clientRequestId": str(uuid.uuid4()),
            "clientPrice": instrument["price"],
            "slippageTolerancePct": SLIPPAGE_TOLERANCE_PCT,
        }
        reply = await self._call("POST", "/api/positions/open", bot, json=body)
        if reply is None:
            return
        if reply.status_code != 201:
            if self._refused(reply) in STALE_MARKET_CODES:
                self.market_read_at = float("-inf")
            return
        answer = reply.json()
        self.report.replayed += bool(answer["replayed"])
        if answer["position"]["id"] not in bot.positions:
            bot.positions.append(answer["position"]["id"])
            self.report.opened += 1

    async def close(self, bot: Bot, position_id: str) -> None:
        params = {"clientRequestId": str(uuid.uuid4())}
        reply = await self._call("DELETE", f"/api/positions/{position_id}", bot, params=params)
        if reply is None:
            return
        if reply.status_code == 200:
            bot.positions.remove(position_id)
            self.report.closed += 1
            self.report.replayed += bool(reply.json()["replayed"])
        elif self._refused(reply) in GONE_CODES:
            bot.positions.remove(position_id)

    def _refused(self, reply: httpx.Response) -> str:
        code = _error_code(reply)
        self.report.refused[code] += 1
        return code

    async def _call(
        self, method: str, path: str, bot: Bot | None = None, **request: Any
    ) -> httpx.Response | None:
        """One API call, tried again (same body, so the same clientRequestId) after no answer,
        a 5xx or a 429 (after its Retry-After), and after signing in again on a 401. None when
        every attempt failed."""
        for _ in range(ATTEMPTS):
            headers = {"Authorization": f"Bearer {bot.token}"} if bot else {}
            try:
                reply = await self.client.request(method, path, headers=headers, **request)
            except httpx.TransportError as exc:
                self.report.failures += 1
                log.warning("bots: %s %s: %s", method, path, type(exc).__name__)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            if reply.status_code >= 500:
                self.report.failures += 1
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            if reply.status_code == 429:
                await asyncio.sleep(float(reply.headers.get("Retry-After", RETRY_PAUSE_S)))
                continue
            if reply.status_code == 401 and bot is not None:
                await self.sign_in()
                continue
            return reply
        return None

    async def run(
        self,
        rate_per_s: float,
        *,
        turns: int | None = None,
        report: Callable[[BotReport], None] | None = None,
    ) -> BotReport:
        """Trade about `rate_per_s` times a second (Poisson arrivals) for `turns` turns (for ever
        when None), calling `report` every REPORT_EVERY_S."""
        if not self.bots:
            await self.sign_in()
        done, reported_at = 0, time.monotonic()
        while turns is None or done < turns:
            await self.turn()
            done += 1
            if report is not None and time.monotonic() - reported_at >= REPORT_EVERY_S:
                report(self.report)
                reported_at = time.monotonic()
            await asyncio.sleep(self.rng.expovariate(rate_per_s))
        return self.report


async def run_bots(
    base_url: str,
    count: int,
    rate_per_s: float,
    *,
    turns: int | None = None,
    seed: int | None = None,
    source_address: str | None = None,
) -> BotReport:
    """`ftl bots`: wait for the API at `base_url`, sign the bots in and trade.

    `source_address` is the local address the bots connect from: `make run` gives them
    127.0.0.2, so the API sees them as a client of their own and their requests never count
    against the per-IP rate limit of a person trying the API from 127.0.0.1 beside them."""
    # NOTE: a line per request would drown `make run`; the bots print a summary instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    transport = httpx.AsyncHTTPTransport(local_address=source_address)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=REQUEST_TIMEOUT_S, transport=transport
    ) as client:
        traders = Traders(client, count, rng=random.Random(seed))
        await traders.wait_for_api()
        await traders.sign_in()
        print(
            f"bots: {count} synthetic traders ({BOT_PREFIX}0001...) signed in at {base_url};"
            f" about {rate_per_s:g} trades a second",
            flush=True,
        )
        result = await traders.run(
            rate_per_s, turns=turns, report=lambda r: print(f"bots: {r.summary()}", flush=True)
        )
    print(f"bots: {result.summary()}", flush=True)
    return result
