"""`ftl recover` at full size (SPEC §2: well under 60 s for 50,000 users; target < 10 s).

Builds USERS users with wallets, POSITIONS_PER_USER open positions each (some with stop-loss and
take-profit), one closed position for every other user (the boards; closed after his open ones
were opened, so his margin watermark is rebuilt too) and TICKS_PER_INSTRUMENT ticks per
instrument, one a minute up to now, directly in Postgres (COPY), FLUSHDB, then times `recover`.
Prints one JSON object.

    python -m bench.recover [--users 50000] --reset

Needs DATABASE_URL and REDIS_URL pointing at SCRATCH stores: --reset empties every table of the
(migrated) database, and Redis is flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ftl.core.config import get_settings
from ftl.ops.recover import recover
from ftl.store.db.engine import libpq_url
from ftl.store.db.models import Base
from ftl.store.services import Services

INSTRUMENTS = 300
POSITIONS_PER_USER = 3
TICKS_PER_INSTRUMENT = 100


COPY_POSITIONS = (
    "COPY cfd_positions (id, user_id, instrument_id, direction, lot_size, entry_price, margin,"
    " stop_loss, take_profit, status, exit_price, realized_pnl, closed_by, open_request_id,"
    " open_seq, close_seq, opened_at, closed_at) FROM STDIN"
)


def copy_users(pg: psycopg.Connection[Any], user_ids: list[uuid.UUID]) -> None:
    """Synthetic users (no wallet yet), in the 14 districts in turn."""
    with pg.cursor().copy(
        "COPY users (id, first_name, display_name, district_id, referral_code, is_synthetic)"
        " FROM STDIN"
    ) as copy:
        for n, uid in enumerate(user_ids):
            copy.write_row((uid, "Bench", f"Bench {n}", n % 14 + 1, f"{n:08x}", True))


def build(database_url: str, users: int, rng: random.Random) -> None:
    now = datetime.now(UTC)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with psycopg.connect(libpq_url(database_url)) as pg:
        pg.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        pg.execute(
            "INSERT INTO districts (id, name) SELECT n, 'District ' || n"
            " FROM generate_series(1, 14) n"
        )
        opened_at = now - timedelta(minutes=TICKS_PER_INSTRUMENT)
        for day in {opened_at.date(), now.date()}:
            pg.execute("SELECT ftl_ensure_price_ticks_partition(%s)", (day,))
        instrument_ids = [uuid.uuid4() for _ in range(INSTRUMENTS)]
        with pg.cursor().copy(
            "COPY instruments (id, idx, sportmonks_player_id, name, team, position, base_price,"
            " live_base_price) FROM STDIN"
        ) as copy:
            for n, iid in enumerate(instrument_ids, start=1):
                copy.write_row((iid, n, 800_000 + n, f"Player {n}", "BRA", "FWD", 100, 100))
        user_ids = [uuid.uuid4() for _ in range(users)]
        copy_users(pg, user_ids)
        with pg.cursor().copy("COPY wallets (user_id, realized_pnl) FROM STDIN") as copy:
            for n, uid in enumerate(user_ids):
                copy.write_row((uid, rng.randint(-500, 500) if n % 2 else 0))
        with pg.cursor().copy(COPY_POSITIONS) as copy:
            for n, uid in enumerate(user_ids):
                for k in range(POSITIONS_PER_USER):
                    long = rng.random() < 0.5
                    stops = (50, 200) if long else (200, 50)
                    copy.write_row(
                        (uuid.uuid4(), uid, rng.choice(instrument_ids),
                         "long" if long else "short", 1, 100, 1000,
                         *(stops if k == 0 else (None, None)), "open", None, None, None,
                         f"o{k}", 1, None, opened_at, None)
                    )  # fmt: skip
                if n % 2:
                    closed_at = now - timedelta(milliseconds=n)
                    copy.write_row(
                        (uuid.uuid4(), uid, rng.choice(instrument_ids), "long", 1, 100, 1000,
                         None, None, "closed", 101, 100, "user", "c", 1, 2, closed_at, closed_at)
                    )  # fmt: skip
        with pg.cursor().copy(
            "COPY price_ticks (instrument_id, seq, at, price, live_base_price, net_lots, source)"
            " FROM STDIN"
        ) as copy:
            for iid in instrument_ids:
                for seq in range(1, TICKS_PER_INSTRUMENT + 1):
                    at = now - timedelta(minutes=TICKS_PER_INSTRUMENT - seq)
                    copy.write_row((iid, seq, at, 100, 100, 0, 1))


async def timed_recover() -> dict[str, object]:
    services = Services.create(get_settings())
    try:
        await services.redis.flushdb()
        start = time.perf_counter()
        report = await recover(services, progress=print)
        seconds = time.perf_counter() - start
    finally:
        await services.close()
    return {
        "bench": "recover",
        "users": report.wallets,
        "open_positions": report.positions,
        "board_members": report.board_members,
        "watermarks": report.watermarks,
        "instruments": report.instruments,
        "ticks": report.ticks,
        "recover_s": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--reset", action="store_true", help="empty the scratch database first")
    args = parser.parse_args()
    if not args.reset:
        parser.error("--reset is required: the bench empties the scratch database")
    started = time.perf_counter()
    build(get_settings().database_url, args.users, random.Random(args.seed))
    build_s = round(time.perf_counter() - started, 2)
    result = asyncio.run(timed_recover())
    result["build_s"] = build_s
    print(json.dumps(result))


if __name__ == "__main__":
    main()
