"""Safe boxes (docs/decisions/0046): what an evaluation that ended without a washout promises,
stored per user, and the holders an after-tick pass may leave out because their box still holds."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from uuid import UUID

from ftl.store import keys
from ftl.store.services import Services
from ftl.trading.margin.replay import HeldInstrument, SafeBox
from ftl.trading.margin.tick_logs import TickLogs

# Safe boxes (docs/decisions/0046): checked a chunk of holders per margin_boxes.lua call (PERF:
# 100 keeps one call under half a millisecond of Redis, which trades wait behind; 0162); a box
# lapses after this many ticks on one instrument (so a user it leaves out still gets his
# watermark moved, and his window stays inside the tick log) and after its TTL (users who left).
BOX_CHUNK_USERS = 100
BOX_MAX_TICKS = 150
BOX_TTL_MS = 600_000
# PERF: a pass reads every holder's box, and most are the text the last pass read: parsed once
# per process (15.6 -> 0.3 µs a box; 50,000 holders a pass, docs/decisions/0162). About 1 KiB
# each at most.
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


async def boxes(services: Services, user_ids: Sequence[UUID]) -> list[SafeBox | None]:
    """Each user's safe box if it is still valid for his wallet."""
    reply: list[str] = await services.scripts.call(
        "margin_boxes",
        keys=[key for u in user_ids for key in (keys.wallet(u), keys.margin_box(u))],
    )
    return [_parse_box(text) for text in reply]


async def outside_boxes(services: Services, logs: TickLogs, user_ids: list[UUID]) -> list[UUID]:
    """The users some tick before the pass's cut may have moved, likeliest to breach first: no
    valid box (his wallet changed: a washout, a trade), a box the ticks since strained past its
    slack, or a box more than BOX_MAX_TICKS old on some instrument.

    NOTE: every instrument of the box counts, not only the ticked ones: the box says nothing
    happens while *all* prices stay where it allows, and a tick of another instrument may
    still wait for its own pass (docs/decisions/0046).
    """
    strained: list[tuple[float, UUID]] = []
    seqs_now: dict[UUID, int] = {}
    for at in range(0, len(user_ids), BOX_CHUNK_USERS):
        chunk = user_ids[at : at + BOX_CHUNK_USERS]
        held = await boxes(services, chunk)
        instruments = {iid for box in held if box for iid in box.instruments}
        await _read_seqs(services, instruments - seqs_now.keys(), seqs_now)
        firsts: dict[UUID, int] = {}
        for n, box in enumerate(held):
            if box is None:
                continue
            if any(seqs_now[i] - h.seq > BOX_MAX_TICKS for i, h in box.instruments.items()):
                # PERF: a lapsed box is left out before fetching: its ticks may be older than
                # the log.
                held[n] = None
                continue
            for iid, h in box.instruments.items():
                firsts[iid] = min(h.seq, firsts.get(iid, h.seq))
        await logs.fetch(firsts)
        for user_id, box in zip(chunk, held, strict=True):
            if box is None:
                strained.append((float("inf"), user_id))
                continue
            windows = {i: logs.range_after(i, h.seq) for i, h in box.instruments.items()}
            if not box.holds(windows):
                strained.append((box.strain(windows), user_id))
    strained.sort(key=lambda found: -found[0])
    return [user_id for _, user_id in strained]


async def _read_seqs(services: Services, instrument_ids: set[UUID], into: dict[UUID, int]) -> None:
    """The instruments' last seqs now."""
    ids = list(instrument_ids)
    if not ids:
        return
    async with services.redis.pipeline(transaction=False) as pipe:
        for iid in ids:
            pipe.hget(keys.instrument(iid), "seq")
        seqs: list[str | None] = await pipe.execute()
    into.update((iid, int(seq or 0)) for iid, seq in zip(ids, seqs, strict=True))


async def save_boxes(services: Services, made: Sequence[tuple[UUID, str, SafeBox]]) -> None:
    """Replace the users' boxes, each (user, the fingerprint of the wallet it was made for, box).

    NOTE: one SET each, never a part of a box at a time: a slack and exposures of different
    boxes together may promise more than the wallet has.
    """
    if not made:
        return
    async with services.redis.pipeline(transaction=False) as pipe:
        for user_id, fingerprint, box in made:
            pipe.set(keys.margin_box(user_id), box_text(fingerprint, box), px=BOX_TTL_MS)
        await pipe.execute()
