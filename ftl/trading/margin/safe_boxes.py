"""Safe boxes (docs/decisions/0046): what an evaluation that ended without a washout promises,
stored per user, and the holders an after-tick pass may leave out because their box still holds."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from uuid import UUID

from ftl.store import keys
from ftl.store.services import Services
from ftl.trading.margin.replay import HeldInstrument, PriceRange, SafeBox
from ftl.trading.margin.tick_logs import TickLogs

# Safe boxes (docs/decisions/0046): checked a chunk of holders per margin_boxes.lua call (PERF:
# 100 keeps one call under half a millisecond of Redis, which trades wait behind; 0162); a box
# lapses after this many ticks on one instrument (so a user it leaves out still gets his
# watermark moved, and his window stays inside the tick log) and after its TTL (users who left).
BOX_CHUNK_USERS = 100
BOX_MAX_TICKS = 1_000
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


# PERF: user -> (his box's text as Redis holds it, that box moved on to where this process's last
# pass left it; docs/decisions/0163). Only a hint for this process: Redis returning another text
# (a new box, a changed wallet) replaces it, and any other process starts from the stored box.
_moved_on: dict[UUID, tuple[str, SafeBox]] = {}
MOVED_ON_USERS = 200_000  # about 1 KiB each at most; past it the hints start again


def _current(user_id: UUID, text: str, box: SafeBox) -> SafeBox:
    kept = _moved_on.get(user_id)
    return kept[1] if kept is not None and kept[0] == text else box


def _move_on(
    user_id: UUID, text: str, box: SafeBox, windows: dict[UUID, PriceRange | None], logs: TickLogs
) -> None:
    """Remember the box made again from the last tick of each window it held through."""
    ends = {}
    for iid, window in windows.items():
        held = box.instruments[iid]
        # NOTE: only a window with every seq after the box's (seqs count up by one per
        # instrument): a tick left out for its time (at or after the cut) must still be judged.
        if window is None or window.ticks != window.last_seq - held.seq:
            continue
        price = logs.price_at(iid, window.last_seq)
        if price is not None:
            ends[iid] = (window.last_seq, price)
    moved = box.moved_on(ends) if ends else None
    if moved is not None:
        if len(_moved_on) >= MOVED_ON_USERS:
            _moved_on.clear()
        _moved_on[user_id] = (text, moved)


async def outside_boxes(services: Services, logs: TickLogs, user_ids: list[UUID]) -> list[UUID]:
    """The users some tick before the pass's cut may have moved, likeliest to breach first: no
    valid box (his wallet changed: a washout, a trade), a box the ticks since strained past its
    slack, or a box more than BOX_MAX_TICKS old on some instrument.

    NOTE: every instrument of the box counts, not only the ticked ones: the box says nothing
    happens while *all* prices stay where it allows, and a tick of another instrument may
    still wait for its own pass (docs/decisions/0046).

    PERF: a box that holds is moved on to the last tick of the pass (in this process only), so
    the next pass ranges over the ticks since this one, not since the box was made; its age
    (BOX_MAX_TICKS) still counts from where the stored box was made (docs/decisions/0163).
    """
    strained: list[tuple[float, UUID]] = []
    seqs_now: dict[UUID, int] = {}
    for at in range(0, len(user_ids), BOX_CHUNK_USERS):
        chunk = user_ids[at : at + BOX_CHUNK_USERS]
        texts = await _box_texts(services, chunk)
        stored = [_parse_box(text) for text in texts]
        instruments = {iid for box in stored if box for iid in box.instruments}
        await _read_seqs(services, instruments - seqs_now.keys(), seqs_now)
        held: list[SafeBox | None] = []
        firsts: dict[UUID, int] = {}
        for user_id, text, box in zip(chunk, texts, stored, strict=True):
            if box is None or any(
                seqs_now[i] - h.seq > BOX_MAX_TICKS for i, h in box.instruments.items()
            ):
                # PERF: a lapsed box is left out before fetching: its ticks may be older than
                # the log.
                held.append(None)
                continue
            current = _current(user_id, text, box)
            held.append(current)
            for iid, h in current.instruments.items():
                firsts[iid] = min(h.seq, firsts.get(iid, h.seq))
        await logs.fetch(firsts)
        for user_id, text, box in zip(chunk, texts, held, strict=True):
            if box is None:
                _moved_on.pop(user_id, None)
                strained.append((float("inf"), user_id))
                continue
            windows = {i: logs.range_after(i, h.seq) for i, h in box.instruments.items()}
            if box.holds(windows):
                _move_on(user_id, text, box, windows, logs)
            else:
                _moved_on.pop(user_id, None)
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
