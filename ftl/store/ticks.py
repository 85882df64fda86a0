"""A tick: one price change of one instrument (SPEC §1.3), as Redis carries it.

The Lua scripts write the same JSON object (cjson) to the `price:{instrumentId}` channel and the
`ticklog:{instrumentId}` sorted set; the flusher copies it to `price_ticks`, the WebSocket process
turns it into a msgpack frame, the margin replay reads it. Field names are short because every
tick crosses pub/sub to every ws replica:

    {"id": instrumentId, "i": idx, "q": seq, "p": priceCents, "b": liveBasePriceCents,
     "n": netLotsCentis, "k": kModMicros, "s": source, "t": atEpochMs, "d": 0 | 1 (degraded)}

`b`, `n` and `k` are the curve at the tick: a washout the tick triggers fills along it
(docs/decisions/0090). Ticks written before `k` existed read with `k_mod_micros` None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any
from uuid import UUID


class TickSource(IntEnum):
    LIVE = 0
    TRADE = 1
    POSTMATCH = 2
    REPLAY = 3
    SYNTHETIC = 4


@dataclass(frozen=True)
class Tick:
    instrument_id: UUID
    idx: int
    seq: int
    price_cents: int
    live_base_price_cents: int
    net_lots_centis: int
    source: TickSource
    at_ms: int
    degraded: bool = False
    k_mod_micros: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": str(self.instrument_id),
                "i": self.idx,
                "q": self.seq,
                "p": self.price_cents,
                "b": self.live_base_price_cents,
                "n": self.net_lots_centis,
                **({} if self.k_mod_micros is None else {"k": self.k_mod_micros}),
                "s": int(self.source),
                "t": self.at_ms,
                "d": int(self.degraded),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Tick:
        data: dict[str, Any] = json.loads(text)
        return cls(
            instrument_id=UUID(data["id"]),
            idx=int(data["i"]),
            seq=int(data["q"]),
            price_cents=int(data["p"]),
            live_base_price_cents=int(data["b"]),
            net_lots_centis=int(data["n"]),
            source=TickSource(int(data["s"])),
            at_ms=int(data["t"]),
            degraded=bool(data.get("d", 0)),
            k_mod_micros=None if data.get("k") is None else int(data["k"]),
        )
