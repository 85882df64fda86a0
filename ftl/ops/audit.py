"""`ftl audit`: the invariants between Redis hot state and Postgres, every violation listed.

Durable (Postgres alone):
- `balance`: wallets.balance = 10,000 + Σ wallet_ledger amounts of the user;
- `realized_pnl`: wallets.realized_pnl = Σ realized PnL of his closed positions
  = Σ of his `position_closed` ledger rows; `bonus`: wallets.bonus_total = Σ referral rows;
- `ledger`: every closed position has its one `close:{id}` ledger row with amount = its PnL,
  and no open position has one;
- `net_lots`: instruments.net_lots = Σ lots × direction of the open positions.
Hot against durable (meaningful once the flusher has drained the outbox: docs/decisions/0070):
- `hot_wallet`: a wallet hash agrees with its row and keeps balance = 10,000 + realized + bonus;
- `hot_net_lots`: the instrument hash's netLots = Σ open lots in Postgres;
- `board`: each user with a closed position is on the overall board and his district board,
  once, with score = Σ realized PnL; nobody else is on them;
- `open_and_closed`: no position is open on one side and closed (or gone) on the other;
  `not_durable`: no open position in Redis is missing from Postgres.
Hot against itself (docs/decisions/0094):
- `held`: a hot wallet's `held` hash counts, per instrument, its user's open position hashes;
- `holders`: an instrument's holders index holds every user with an open position hash on it
  whose wallet is in hot state, and nobody without one.
Acknowledged trades (`acknowledged`): each open or close a client got a 2xx for is in Postgres
once, with its request ids and, for a close, status closed.
Margin hints (`margin_box`): a safe box made for the wallet as it is now keeps its promise over
the user's open positions (ftl/trading/margin/replay.py box_keeps_its_promise,
docs/decisions/0046); a box of an older wallet is ignored by the evaluator and so by the audit.

The loaders read everything in bulk; `check` is a pure function over what they read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy import text

from ftl.accounts.users import STARTING_BALANCE
from ftl.core.money import to_cents
from ftl.market.leaderboard import DISTRICTS, user_of
from ftl.store import keys
from ftl.store.services import Services
from ftl.trading.margin import safe_boxes, snapshots
from ftl.trading.margin.replay import box_keeps_its_promise

STARTING_BALANCE_CENTS = to_cents(STARTING_BALANCE)
# PERF: keys per lua/audit_read.lua call; a multiple of 3: a user's three keys stay together
REDIS_BATCH = 2_100
SCAN_COUNT = 10_000  # PERF: keys SCAN looks at per round trip
DRAIN_POLL_S = 0.1


@dataclass(frozen=True)
class Violation:
    kind: str
    subject: str  # the user, instrument or position id it is about
    details: dict[str, Any]

    def line(self) -> str:
        return f"{self.kind} {self.subject} {json.dumps(self.details, sort_keys=True)}"


@dataclass(frozen=True)
class DurableWallet:
    balance_cents: int
    realized_cents: int
    bonus_cents: int
    district_id: int
    ledger_cents: int  # Σ of every ledger row
    ledger_closed_cents: int  # Σ of `position_closed` rows
    ledger_bonus_cents: int  # Σ of referral rows
    closed_pnl_cents: int  # Σ realized PnL of closed positions
    closed_count: int


@dataclass(frozen=True)
class OpenPosition:
    user_id: str
    instrument_id: str
    signed_lots_centis: int  # lots × direction


@dataclass(frozen=True)
class HotWallet:
    balance_cents: int
    realized_cents: int
    bonus_cents: int
    open_ids: frozenset[str]
    held: dict[str, int]  # instrument -> how many of the user's positions are open on it


@dataclass(frozen=True)
class HotPosition:
    user_id: str
    status: str
    instrument_id: str


@dataclass(frozen=True)
class Acknowledged:
    """A trade a client was answered 2xx for: the open's ids, and the close's if it closed."""

    user_id: str
    position_id: str
    open_request_id: str
    close_request_id: str | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Acknowledged:
        return cls(
            str(UUID(raw["userId"])),
            str(UUID(raw["positionId"])),
            str(raw["openRequestId"]),
            None if raw.get("closeRequestId") is None else str(raw["closeRequestId"]),
        )


@dataclass(frozen=True)
class StoredPosition:
    user_id: str
    status: str
    open_request_id: str
    close_request_id: str | None


@dataclass
class Durable:
    wallets: dict[str, DurableWallet] = field(default_factory=dict)
    net_lots: dict[str, int] = field(default_factory=dict)  # instruments.net_lots, centilots
    open_positions: dict[str, OpenPosition] = field(default_factory=dict)
    ledger_faults: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    # the rows of the positions hot state holds and of the acknowledged trades
    stored: dict[str, StoredPosition] = field(default_factory=dict)

    def open_lots(self) -> dict[str, int]:
        """Σ lots × direction of the open positions, by instrument."""
        lots: dict[str, int] = defaultdict(int)
        for p in self.open_positions.values():
            lots[p.instrument_id] += p.signed_lots_centis
        return lots


Report = Callable[..., None]  # report(kind, subject, **details)


@dataclass
class Hot:
    present: bool = True  # instrument_idx exists: hot state was seeded or recovered
    wallets: dict[str, HotWallet] = field(default_factory=dict)
    positions: dict[str, HotPosition] = field(default_factory=dict)
    net_lots: dict[str, int] = field(default_factory=dict)
    holders: dict[str, frozenset[str]] = field(default_factory=dict)  # instrument -> user ids
    boards: dict[str, dict[str, int]] = field(default_factory=dict)  # board key -> member: score


def check(durable: Durable, hot: Hot, acknowledged: Iterable[Acknowledged] = ()) -> list[Violation]:
    """Every violation of the invariants of this module's docstring."""
    found: list[Violation] = []

    def report(kind: str, subject: str, **details: Any) -> None:
        found.append(Violation(kind, subject, details))

    for uid, w in durable.wallets.items():
        if w.balance_cents != STARTING_BALANCE_CENTS + w.ledger_cents:
            report("balance", uid, balance=w.balance_cents, ledger=w.ledger_cents)
        if not w.realized_cents == w.closed_pnl_cents == w.ledger_closed_cents:
            report(
                "realized_pnl",
                uid,
                wallet=w.realized_cents,
                closedPositions=w.closed_pnl_cents,
                ledger=w.ledger_closed_cents,
            )
        if w.bonus_cents != w.ledger_bonus_cents:
            report("bonus", uid, wallet=w.bonus_cents, ledger=w.ledger_bonus_cents)
    for subject, problem, details in durable.ledger_faults:
        report("ledger", subject, problem=problem, **details)

    open_lots = durable.open_lots()
    for iid, net in durable.net_lots.items():
        if net != open_lots.get(iid, 0):
            report("net_lots", iid, instrument=net, openPositions=open_lots.get(iid, 0))

    if not hot.present:
        report("hot_state_missing", keys.INSTRUMENT_IDX, hint="run `ftl recover`")
    else:
        _check_hot(durable, hot, open_lots, report)
    _check_acknowledged(durable, acknowledged, report)
    return found


def _check_hot(durable: Durable, hot: Hot, open_lots: dict[str, int], report: Report) -> None:
    for iid, net in hot.net_lots.items():
        if net != open_lots.get(iid, 0):
            report("hot_net_lots", iid, hot=net, openPositions=open_lots.get(iid, 0))

    for uid, w in hot.wallets.items():
        if w.balance_cents != STARTING_BALANCE_CENTS + w.realized_cents + w.bonus_cents:
            report(
                "hot_wallet",
                uid,
                problem="balance is not 10,000 + realized + bonus",
                balance=w.balance_cents,
                realized=w.realized_cents,
                bonus=w.bonus_cents,
            )
        stored = durable.wallets.get(uid)
        if stored is None:
            report("hot_wallet", uid, problem="no wallet row in Postgres")
        elif (w.balance_cents, w.realized_cents, w.bonus_cents) != (
            stored.balance_cents,
            stored.realized_cents,
            stored.bonus_cents,
        ):
            report(
                "hot_wallet",
                uid,
                problem="differs from Postgres",
                hot=[w.balance_cents, w.realized_cents, w.bonus_cents],
                durable=[stored.balance_cents, stored.realized_cents, stored.bonus_cents],
            )

    _check_boards(durable, hot, report)
    _check_positions(durable, hot, report)
    _check_holders(hot, report)


def _check_boards(durable: Durable, hot: Hot, report: Report) -> None:
    expected: dict[str, dict[str, int]] = {key: {} for key in hot.boards}
    for uid, w in durable.wallets.items():
        if w.closed_count:
            for key in (keys.BOARD_OVERALL, keys.board_district(w.district_id)):
                expected.setdefault(key, {})[uid] = w.closed_pnl_cents
    for key, members in hot.boards.items():
        seen = Counter(user_of(member) for member in members)
        scores = {user_of(member): score for member, score in members.items()}
        for uid, count in seen.items():
            if count > 1:
                report("board", uid, board=key, problem="on the board more than once")
            if uid not in expected[key]:
                report("board", uid, board=key, problem="on the board without a closed position")
        for uid, score in expected[key].items():
            if uid not in scores:
                report("board", uid, board=key, problem="missing", realizedPnl=score)
            elif scores[uid] != score:
                report("board", uid, board=key, score=scores[uid], realizedPnl=score)


def _check_positions(durable: Durable, hot: Hot, report: Report) -> None:
    def status_of(pid: str) -> str:
        if pid in durable.open_positions:
            return "open"
        stored = durable.stored.get(pid)
        return "absent" if stored is None else stored.status

    for pid, p in hot.positions.items():
        stored = status_of(pid)
        if p.status == "open" and stored == "absent":
            report("not_durable", pid, userId=p.user_id)
        elif p.status != stored and stored != "absent":
            # NOTE: a closed hash whose row is closed is only waiting for the flusher's delete.
            report("open_and_closed", pid, userId=p.user_id, hot=p.status, durable=stored)
    for uid, w in hot.wallets.items():
        for pid in w.open_ids:
            hot_status = hot.positions[pid].status if pid in hot.positions else "absent"
            if hot_status != "open":
                report("open_and_closed", pid, userId=uid, openSet="open", hot=hot_status)
    for pid, row in durable.open_positions.items():
        holder = hot.wallets.get(row.user_id)
        # NOTE: a wallet not in hot state is loaded with its open positions on first use.
        if holder is not None and pid not in holder.open_ids:
            report("open_and_closed", pid, userId=row.user_id, durable="open", hot="not open")


def _check_holders(hot: Hot, report: Report) -> None:
    open_on: dict[str, Counter[str]] = defaultdict(Counter)  # user -> instrument -> open hashes
    for p in hot.positions.values():
        if p.status == "open":
            open_on[p.user_id][p.instrument_id] += 1
    for uid, w in hot.wallets.items():
        counted = dict(open_on.get(uid, {}))
        if w.held != counted:
            report("held", uid, hot=w.held, openPositions=counted)
    holding: dict[str, set[str]] = defaultdict(set)  # instrument -> users with an open hash on it
    for uid, counts in open_on.items():
        for iid in counts:
            holding[iid].add(uid)
    for iid, members in hot.holders.items():
        for uid in sorted(members - holding[iid]):
            report("holders", uid, instrumentId=iid, problem="in the index, no open position")
        for uid in sorted(holding[iid] - members):
            if uid in hot.wallets:
                report("holders", uid, instrumentId=iid, problem="missing from the index")


def _check_acknowledged(
    durable: Durable, acknowledged: Iterable[Acknowledged], report: Report
) -> None:
    owners: dict[str, list[str]] = defaultdict(list)
    for ack in acknowledged:
        owners[ack.position_id].append(ack.open_request_id)
        stored = durable.stored.get(ack.position_id)
        if stored is None:
            report("acknowledged", ack.position_id, problem="not in Postgres")
            continue
        if (stored.user_id, stored.open_request_id) != (ack.user_id, ack.open_request_id):
            report(
                "acknowledged",
                ack.position_id,
                problem="open differs",
                acknowledged=[ack.user_id, ack.open_request_id],
                stored=[stored.user_id, stored.open_request_id],
            )
        if ack.close_request_id is not None and (
            stored.status != "closed" or stored.close_request_id != ack.close_request_id
        ):
            report(
                "acknowledged",
                ack.position_id,
                problem="close missing",
                status=stored.status,
                closeRequestId=stored.close_request_id,
            )
    for pid, request_ids in owners.items():
        if len(set(request_ids)) > 1:
            # NOTE: two different opens answered with one position: one of them was lost.
            report("acknowledged", pid, problem="two opens, one position", opens=request_ids)


# ---------------------------------------------------------------------------------- loading

# PERF: money as integer cents and ids as text straight from SQL: no Decimal or UUID per row.
WALLETS = """
SELECT w.user_id::text, (w.balance * 100)::bigint AS balance,
       (w.realized_pnl * 100)::bigint AS realized, (w.bonus_total * 100)::bigint AS bonus,
       u.district_id, (coalesce(l.total, 0) * 100)::bigint AS ledger,
       (coalesce(l.closed, 0) * 100)::bigint AS ledger_closed,
       (coalesce(l.bonus, 0) * 100)::bigint AS ledger_bonus,
       (coalesce(c.pnl, 0) * 100)::bigint AS closed_pnl, coalesce(c.n, 0) AS closed_count
FROM wallets w
JOIN users u ON u.id = w.user_id
LEFT JOIN (SELECT user_id, sum(amount) AS total,
                  sum(amount) FILTER (WHERE reason = 'position_closed') AS closed,
                  sum(amount) FILTER (WHERE reason <> 'position_closed') AS bonus
           FROM wallet_ledger GROUP BY user_id) l ON l.user_id = w.user_id
LEFT JOIN (SELECT user_id, sum(realized_pnl) AS pnl, count(*) AS n
           FROM cfd_positions WHERE status = 'closed' GROUP BY user_id) c
    ON c.user_id = w.user_id
"""
INSTRUMENTS = "SELECT id::text, (net_lots * 100)::bigint AS net_lots FROM instruments"
OPEN_POSITIONS = """
SELECT id::text, user_id::text, instrument_id::text,
       (CASE WHEN direction = 'long' THEN lot_size ELSE -lot_size END * 100)::bigint
           AS signed_lots
FROM cfd_positions WHERE status = 'open'
"""
# NOTE: the per-position ledger check runs in SQL: it returns only the faults.
LEDGER_FAULTS = """
SELECT p.id::text, p.status::text AS status, (p.realized_pnl * 100)::bigint AS realized,
       (l.amount * 100)::bigint AS amount, l.n
FROM cfd_positions p
LEFT JOIN (SELECT position_id, sum(amount) AS amount, count(*) AS n FROM wallet_ledger
           WHERE position_id IS NOT NULL GROUP BY position_id) l ON l.position_id = p.id
WHERE (p.status = 'closed' AND (l.n IS DISTINCT FROM 1 OR l.amount <> p.realized_pnl))
   OR (p.status = 'open' AND l.n IS NOT NULL)
"""
POSITIONS_BY_ID = """
SELECT id::text, user_id::text, status::text AS status, open_request_id, close_request_id
FROM cfd_positions WHERE id = ANY(CAST(:ids AS uuid[]))
"""


async def load_durable(services: Services) -> Durable:
    """Postgres as the audit needs it (the rows of single positions: `load_positions`)."""
    durable = Durable()
    async with services.engine.connect() as conn:
        for r in await conn.execute(text(WALLETS)):
            durable.wallets[r.user_id] = DurableWallet(
                r.balance,
                r.realized,
                r.bonus,
                r.district_id,
                r.ledger,
                r.ledger_closed,
                r.ledger_bonus,
                r.closed_pnl,
                r.closed_count,
            )
        durable.net_lots = {r.id: r.net_lots for r in await conn.execute(text(INSTRUMENTS))}
        for r in await conn.execute(text(OPEN_POSITIONS)):
            durable.open_positions[r.id] = OpenPosition(r.user_id, r.instrument_id, r.signed_lots)
        for r in await conn.execute(text(LEDGER_FAULTS)):
            problem = "ledger row on an open position" if r.status == "open" else "close entry"
            details = {"rows": r.n or 0, "amount": r.amount, "realizedPnl": r.realized}
            durable.ledger_faults.append((r.id, problem, details))
    return durable


async def load_positions(services: Services, ids: Iterable[str]) -> dict[str, StoredPosition]:
    """The rows of these positions (absent ones are left out)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    async with services.engine.connect() as conn:
        rows = await conn.execute(text(POSITIONS_BY_ID), {"ids": wanted})
        return {
            r.id: StoredPosition(r.user_id, r.status, r.open_request_id, r.close_request_id)
            for r in rows
        }


async def _read(services: Services, kind: str, call_keys: list[str]) -> list[Any]:
    """lua/audit_read.lua over `call_keys`, REDIS_BATCH keys per call."""
    replies: list[Any] = []
    for start in range(0, len(call_keys), REDIS_BATCH):
        batch = call_keys[start : start + REDIS_BATCH]
        replies += await services.scripts.call("audit_read", keys=batch, args=[kind])
    return replies


async def load_hot(
    services: Services, user_ids: Iterable[str], instrument_ids: Iterable[str]
) -> Hot:
    """Redis as the audit needs it: the wallets and instruments Postgres knows, every position
    hash, and the boards."""
    redis = services.redis
    hot = Hot(present=bool(await redis.exists(keys.INSTRUMENT_IDX)))
    users, instruments = list(user_ids), list(instrument_ids)
    wallet_keys = [k for u in users for k in (keys.wallet(u), keys.open_positions(u), keys.held(u))]
    for uid, (balance, realized, bonus, open_ids, held) in zip(
        users, await _read(services, "wallets", wallet_keys), strict=True
    ):
        if balance is not None:
            counts = {_text(held[n]): int(held[n + 1]) for n in range(0, len(held), 2)}
            hot.wallets[uid] = HotWallet(
                int(balance), int(realized), int(bonus), frozenset(map(_text, open_ids)), counts
            )
    async with redis.pipeline(transaction=False) as pipe:
        for iid in instruments:
            pipe.hget(keys.instrument(iid), "netLotsCentis")
            pipe.smembers(keys.holders(iid))
        replies = await pipe.execute()
    nets, members = replies[::2], replies[1::2]
    hot.net_lots = {i: int(n) for i, n in zip(instruments, nets, strict=True) if n is not None}
    hot.holders = {i: frozenset(map(_text, m)) for i, m in zip(instruments, members, strict=True)}

    prefix = keys.position("")
    position_keys = [_text(k) async for k in redis.scan_iter(match=f"{prefix}*", count=SCAN_COUNT)]
    for key, found in zip(
        position_keys, await _read(services, "positions", position_keys), strict=True
    ):
        if found and found[1] is not None:
            hot.positions[key[len(prefix) :]] = HotPosition(
                _text(found[0]), _text(found[1]), _text(found[2] or "")
            )

    boards = [keys.BOARD_OVERALL] + [keys.board_district(d) for d in DISTRICTS]
    async with redis.pipeline(transaction=False) as pipe:
        for board in boards:
            pipe.zrange(board, 0, -1, withscores=True)
        scored: list[list[tuple[str | bytes, float]]] = await pipe.execute()
    for board, pairs in zip(boards, scored, strict=True):
        hot.boards[board] = {_text(member): int(score) for member, score in pairs}
    return hot


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def outbox_backlog(redis: Redis) -> int:
    """Outbox entries not yet committed to Postgres (waiting or taken)."""
    return int(await redis.xlen(keys.OUTBOX))


async def wait_for_flush(redis: Redis, timeout_s: float) -> bool:
    """True once the outbox is empty (the flusher has caught up), False after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while await outbox_backlog(redis):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(DRAIN_POLL_S)
    return True


@dataclass(frozen=True)
class AuditReport:
    violations: list[Violation]
    wallets: int
    open_positions: int
    instruments: int
    acknowledged: int

    def summary(self) -> str:
        if not self.violations:
            return (
                f"audit: clean: {self.wallets} wallets, {self.open_positions} open positions,"
                f" {self.instruments} instruments, {self.acknowledged} acknowledged trades"
            )
        kinds = Counter(v.kind for v in self.violations)
        listed = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
        return f"audit: {len(self.violations)} violations ({listed})"


async def audit(services: Services, acknowledged: Iterable[Acknowledged] = ()) -> AuditReport:
    """Read Postgres, then Redis, and check every invariant."""
    acked = list(acknowledged)
    durable = await load_durable(services)
    hot = await load_hot(services, durable.wallets, durable.net_lots)
    # NOTE: hot positions open in Postgres are known already; only the others need their row.
    unknown = {pid for pid in hot.positions if pid not in durable.open_positions}
    durable.stored = await load_positions(services, unknown | {a.position_id for a in acked})
    return AuditReport(
        check(durable, hot, acked) + await check_margin_boxes(services),
        len(durable.wallets),
        len(durable.open_positions),
        len(durable.net_lots),
        len(acked),
    )


async def check_margin_boxes(services: Services) -> list[Violation]:
    """A `margin_box` violation for every box of a user's current wallet that promises more
    than his balance and open positions in hot state allow."""
    prefix = keys.margin_box("")
    users = [
        UUID(_text(name)[len(prefix) :])
        async for name in services.redis.scan_iter(f"{prefix}*", SCAN_COUNT)
    ]
    found = []
    for at in range(0, len(users), safe_boxes.BOX_CHUNK_USERS):
        chunk = users[at : at + safe_boxes.BOX_CHUNK_USERS]
        boxes = await safe_boxes.boxes(services, chunk)
        states = await snapshots.snapshots(services, chunk)
        for user_id, box, state in zip(chunk, boxes, states, strict=True):
            if (
                box is not None
                and state is not None
                and not box_keeps_its_promise(state.balance_cents, state.positions, box)
            ):
                stored = safe_boxes.box_text(state.fingerprint, box)
                found.append(Violation("margin_box", str(user_id), {"box": stored}))
    return found


def read_acknowledged(lines: Iterable[str]) -> list[Acknowledged]:
    """JSON lines {userId, positionId, openRequestId, closeRequestId?}, blank lines skipped."""
    return [Acknowledged.from_json(json.loads(line)) for line in lines if line.strip()]
