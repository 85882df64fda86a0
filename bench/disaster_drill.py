"""The disaster drill at tournament size: how long a restore onto an empty machine takes and how
much an acknowledged, flushed trade history loses (docs/operations.md, decision 0156).

A private primary archiving its WAL through scripts/backup.sh (archive_timeout
--archive-timeout s; with --stream also `backup.sh stream`, pg_receivewal), USERS users with
three open positions each (bench.recover's data), hot state by `ftl recover`; a base backup;
then --seconds of trading (opens and closes, flushed every FLUSH_EVERY_TRADES trades); with
--audit, `ftl audit` of the primary (seconds in which the stream catches up); then the machine
is lost (PostgreSQL stopped without a checkpoint, its Redis dropped) and scripts/restore.sh
rebuilds both on an empty data directory and an empty Redis. Prints one JSON object: the
restore's own timings, the trades flushed but not restored, how many seconds of flushed trades
they span, and with --audit the audit's violations before and after (equal: the restore is the
same data). Needs the PostgreSQL server binaries (run as root: the `postgres` user) and
redis-server; starts and removes everything it uses.

    python -m bench.disaster_drill [--users 50000] [--seconds 20] [--archive-timeout 60] [--stream]
        [--audit]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import psycopg

from bench.recover import build
from ftl.core.config import get_settings
from ftl.ops.flush import Flusher
from ftl.store import keys
from ftl.store.services import Services
from ftl.trading import trades

# NOTE: the drill runs the same clusters and scripts as tests/e2e/test_disaster_drill.py.
from tests.e2e.crash_stack import PrivatePostgres, PrivateRedis, pg_bindir
from tests.e2e.pg_replica import Restored, WalStream, archive_wal, base_backup, crash

FLUSH_EVERY_TRADES = 20  # about what one flusher batch holds at a few hundred trades a second


def ftl(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ftl")), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    if done.returncode and args[0] != "audit":
        raise SystemExit(f"ftl {' '.join(args)} failed: {done.stderr}")
    return done.stdout + done.stderr


def violations(audit_output: str) -> int:
    """The count on `ftl audit`'s summary line (0 when clean)."""
    found = re.search(r"audit: (\d+) violations", audit_output)
    return int(found[1]) if found else 0


async def trade_for(services: Services, seconds: float, rng: random.Random) -> dict[str, float]:
    """Open and close small positions as fast as one client goes; the id of every position that
    the flusher committed, with the wall time of that commit (a close moves it)."""
    async with services.engine.connect() as conn:
        users = [row[0] for row in await conn.exec_driver_sql("SELECT id FROM users LIMIT 2000")]
        instruments = [row[0] for row in await conn.exec_driver_sql("SELECT id FROM instruments")]
    flusher = Flusher(services, "drill")
    flushed: dict[str, float] = {}
    pending: list[str] = []
    mine: list[tuple[UUID, str]] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if mine and n % 3 == 0:
            user, position = mine.pop(0)
            await trades.close_position(services, trades.Caller(user, "j"), UUID(position), f"c{n}")
        else:
            user, instrument = rng.choice(users), rng.choice(instruments)
            price = int(await services.redis.hget(keys.PRICES, str(instrument)) or 10_000)
            order = trades.OpenOrder.of(
                instrument_id=instrument,
                direction=rng.choice([1, -1]),
                lot_size=0.1,
                client_request_id=f"drill-o{n}",
                client_price=price / 100,
                slippage_tolerance=0.05,
                stop_loss=None,
                take_profit=None,
            )
            reply = json.loads(
                await trades.open_position(services, trades.Caller(user, "j"), order)
            )
            position = reply["position"]["id"]
            mine.append((user, position))
        pending.append(position)
        if len(pending) >= FLUSH_EVERY_TRADES:
            await flusher.flush()
            committed = time.time()
            flushed.update((p, committed) for p in pending)
            pending.clear()
    return flushed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--archive-timeout", type=int, default=60)
    parser.add_argument("--stream", action="store_true", help="also run `backup.sh stream`")
    parser.add_argument(
        "--audit", action="store_true", help="audit the primary before the loss (delays it)"
    )
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    bindir = pg_bindir()
    if bindir is None:
        raise SystemExit("no initdb/pg_ctl (or postgres user)")
    rng = random.Random(args.seed)
    pg, live, empty = PrivatePostgres(bindir), PrivateRedis(), PrivateRedis()
    stream: WalStream | None = None
    restored: Restored | None = None
    backups = archive_wal(pg, timeout_s=args.archive_timeout)
    try:
        ftl("migrate", env={"DATABASE_URL": pg.url})
        build(pg.url, args.users, rng)
        ftl("recover", env={"DATABASE_URL": pg.url, "REDIS_URL": live.url})
        if args.stream:
            stream = WalStream(pg, backups)
        started = time.perf_counter()
        base_backup(pg, backups)
        base_s = time.perf_counter() - started
        settings = replace(get_settings(), database_url=pg.url, redis_url=live.url)

        async def load() -> dict[str, float]:
            services = Services.create(settings)
            await services.scripts.load()
            try:
                return await trade_for(services, args.seconds, rng)
            finally:
                await services.close()

        flushed = asyncio.run(load())
        # NOTE: bench.recover's users have realized P&L without ledger rows: the audit reports
        # them on the primary too, and the restored copy must report exactly as many.
        audit_before = (
            violations(ftl("audit", env={"DATABASE_URL": pg.url, "REDIS_URL": live.url}))
            if args.audit
            else None
        )
        crash(pg)
        lost_at = time.time()
        live.kill()
        if stream is not None:
            stream.stop()
        restored = Restored(bindir, backups, empty.url)
        print(restored.log, file=sys.stderr, end="")  # its step lines, and any audit finding
        if not restored.summary:
            raise SystemExit("restore failed")
        with psycopg.connect(restored.libpq()) as conn:
            there = {str(r[0]) for r in conn.execute("SELECT id FROM cfd_positions")}
        lost = {p: at for p, at in flushed.items() if p not in there}
        print(
            json.dumps(
                {
                    "bench": "disaster_drill",
                    "users": args.users,
                    "archive_timeout_s": args.archive_timeout,
                    "stream": args.stream,
                    "base_backup_s": round(base_s, 2),
                    "base_backup_bytes": sum(
                        f.stat().st_size for f in (backups / "base").rglob("*") if f.is_file()
                    ),
                    "trades_flushed": len(flushed),
                    "trades_lost": len(lost),
                    "lost_window_s": round(lost_at - min(lost.values()), 2) if lost else 0,
                    "crashed_at": datetime.fromtimestamp(lost_at, UTC).isoformat(),
                    "audit_violations_before": audit_before,
                    "audit_violations_after": violations(restored.log),
                    **restored.summary,
                }
            )
        )
    finally:
        if restored is not None:
            restored.destroy()
        if stream is not None:
            stream.stop()
        live.destroy()
        empty.destroy()
        if (pg.data / "postmaster.pid").exists():
            crash(pg)
        shutil.rmtree(pg.dir, ignore_errors=True)
        shutil.rmtree(backups, ignore_errors=True)


if __name__ == "__main__":
    main()
