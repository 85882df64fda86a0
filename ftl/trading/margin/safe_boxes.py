"""Safe boxes (docs/decisions/0046): what an evaluation that ended without a washout promises,
stored per user, and the index of their bounds that tells an after-tick pass which holders it
must evaluate (docs/decisions/0166)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from uuid import UUID

from ftl.store import keys
from ftl.store.services import Services
from ftl.trading.margin.replay import HeldInstrument, SafeBox
from ftl.trading.margin.snapshots import parsed_id, users_with_open_positions
from ftl.trading.margin.tick_logs import ticks_from

# Safe boxes (docs/decisions/0046, 0166): saved a chunk of users per margin_boxes_save.lua call
# (PERF: 100 keeps one call under half a millisecond of Redis, which trades wait behind; 0162);
# a box lapses after this many ticks on one instrument, so a user it leaves out still gets his
# watermark moved and his window stays inside the tick log.
BOX_CHUNK_USERS = 100
# PERF: a save writes about 20 keys a user (his box and its bounds on each instrument): 25 users
# keep one margin_boxes_save.lua call near half a millisecond.
SAVE_CHUNK_USERS = 25
BOX_MAX_TICKS = 1_000
SEED_CHUNK_USERS = 1_000
# PERF: the audit reads every box, and most are the text it read before: parsed once per process
# (15.6 -> 0.3 µs a box, docs/decisions/0162). About 1 KiB each at most.
BOX_PARSE_CACHE = 200_000


def box_text(fingerprint: str, box: SafeBox) -> str:
    """A safe box as keys.margin_box stores it (one string: replaced whole by one SET)."""
    held = ";".join(
        f"{iid}={h.seq}:{h.price_cents}:{h.net_lots_centis}" for iid, h in box.instruments.items()
    )
    return f"{fingerprint}|{int(box.below)}:{box.slack}:{box.headroom}|{held}"


@lru_cache(maxsize=BOX_PARSE_CACHE)
def _parse_box(text: str) -> SafeBox | None:
    """NOTE: cached, so the SafeBox is shared by every pass that reads this text: never change
    it (it is frozen; its instruments mapping is only read)."""
    if not text:
        return None
    kind, _, held = text.partition("|")
    below, slack, headroom = kind.split(":")
    instruments = {}
    for item in held.split(";") if held else ():
        iid, _, numbers = item.partition("=")
        seq, price, net = numbers.split(":")
        instruments[UUID(iid)] = HeldInstrument(int(seq), int(price), int(net))
    return SafeBox(below == "1", int(slack), int(headroom), instruments)


async def _box_texts(services: Services, user_ids: Sequence[UUID]) -> list[str]:
    """Each user's box text if it is still valid for his wallet, else ""."""
    reply: list[str] = await services.scripts.call(
        "margin_boxes",
        keys=[key for u in user_ids for key in (keys.wallet(u), keys.margin_box(u))],
    )
    return reply


async def boxes(services: Services, user_ids: Sequence[UUID]) -> list[SafeBox | None]:
    """Each user's safe box if it is still valid for his wallet."""
    return [_parse_box(text) for text in await _box_texts(services, user_ids)]


async def to_evaluate(services: Services, instrument_ids: Iterable[UUID]) -> list[UUID]:
    """The users an after-tick pass over these instruments must evaluate now (docs/decisions/
    0166): those whose box bounds the ticks since the last pass crossed, first, then every other
    user without a box that speaks for his wallet (margin:unboxed: a trade, a washout, a payout,
    a load, a refused save). Everyone else's box holds through every tick judged so far.

    PERF: the cost is the new ticks and the users they strain, not the holders: the index of
    box bounds (lua/margin_crossed.lua) answers with two range reads per instrument.
    """
    await _seed(services)
    ids = sorted(set(instrument_ids), key=str)
    crossed: list[str] = []
    if ids:
        checked, seqs = await _checked_and_seqs(services, ids)
        args: list[str | int] = [BOX_MAX_TICKS]
        todo = {i: c for i, c in checked.items() if c is None or c < seqs[i]}
        windows = await _windows(services, todo, seqs)
        for iid, seen in todo.items():
            lowest, highest = windows.get(iid) or ("", "")
            args += [str(iid), "" if seen is None else seen, seqs[iid], lowest, highest]
        if todo:
            crossed = await services.scripts.call("margin_crossed", keys=[], args=args)
    unboxed: set[str] = await services.redis.smembers(keys.MARGIN_UNBOXED)  # type: ignore[assignment]
    first = [parsed_id(u) for u in crossed]
    return first + sorted((parsed_id(u) for u in unboxed - set(crossed)), key=str)


async def still_unboxed(services: Services, user_ids: Sequence[UUID]) -> list[UUID]:
    """Those of the users still in margin:unboxed (a share of a pass sent to another process:
    a pass meanwhile may have evaluated some)."""
    if not user_ids:
        return []
    found: list[int] = await services.redis.smismember(  # type: ignore[assignment]
        keys.MARGIN_UNBOXED, [str(u) for u in user_ids]
    )
    return [u for u, member in zip(user_ids, found, strict=True) if member]


async def _checked_and_seqs(
    services: Services, ids: list[UUID]
) -> tuple[dict[UUID, int | None], dict[UUID, int]]:
    async with services.redis.pipeline(transaction=False) as pipe:
        for iid in ids:
            pipe.get(keys.margin_checked(iid))
            pipe.hget(keys.instrument(iid), "seq")
        replies: list[str | None] = await pipe.execute()
    checked = {iid: None if c is None else int(c) for iid, c in zip(ids, replies[::2], strict=True)}
    seqs = {iid: int(s or 0) for iid, s in zip(ids, replies[1::2], strict=True)}
    return checked, seqs


async def _windows(
    services: Services, todo: dict[UUID, int | None], seqs: dict[UUID, int]
) -> dict[UUID, tuple[int, int]]:
    """The lowest and highest price of each instrument's ticks after its checked seq up to its
    seq, for those whose every tick there could be read (the others: every box on them is
    checked)."""
    firsts = {iid: seen + 1 for iid, seen in todo.items() if seen is not None}
    if not firsts:
        return {}
    read = await ticks_from(services, firsts, {iid: seqs[iid] + 1 for iid in firsts})
    found = {}
    for iid, ticks in read.items():
        prices = [t.price_cents for t in ticks]
        if [t.seq for t in ticks] == list(range(firsts[iid], seqs[iid] + 1)) and prices:
            found[iid] = (min(prices), max(prices))
    return found


async def _seed(services: Services) -> None:
    """Once per index (a new Redis, `ftl recover`, an upgrade from boxes without one): every user
    holding a position joins margin:unboxed, since no box of his is indexed yet."""
    if await services.redis.exists(keys.MARGIN_INDEXED):
        return
    holders = await users_with_open_positions(services)
    for at in range(0, len(holders), SEED_CHUNK_USERS):
        chunk = [str(u) for u in holders[at : at + SEED_CHUNK_USERS]]
        await services.redis.sadd(keys.MARGIN_UNBOXED, *chunk)
    await services.redis.set(keys.MARGIN_INDEXED, 1)


def _bound(price: int | None) -> str | int:
    return "" if price is None else price


async def save_boxes(
    services: Services, made: Sequence[tuple[UUID, str, SafeBox]], empty: Sequence[UUID] = ()
) -> int:
    """Store and index the users' boxes, each (user, the fingerprint of the wallet it was made
    for, box); `empty` users hold nothing now (their boxes and index entries go). How many
    boxes were stored: the others no longer speak for their users (lua/margin_boxes_save.lua).

    NOTE: one SET each, never a part of a box at a time: a slack and exposures of different
    boxes together may promise more than the wallet has.
    """
    saved = 0
    rows: list[tuple[UUID, str, SafeBox | None]] = [*made, *((u, "", None) for u in empty)]
    for at in range(0, len(rows), SAVE_CHUNK_USERS):
        args: list[str | int] = []
        for user_id, fingerprint, box in rows[at : at + SAVE_CHUNK_USERS]:
            if box is None:
                args += [str(user_id), "", 0]
                continue
            args += [str(user_id), box_text(fingerprint, box), len(box.instruments)]
            for iid, (floor, ceiling) in box.bounds().items():
                args += [str(iid), box.instruments[iid].seq, _bound(floor), _bound(ceiling)]
        saved += await services.scripts.call("margin_boxes_save", keys=[], args=args)
    return saved
