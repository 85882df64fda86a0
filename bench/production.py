"""Production-shaped load (SPEC §8, issue 20): every Procfile process as `make run` starts it, the
Sportmonks simulator playing a live match polled at the live rate, 2,000 WebSocket clients
subscribed, USERS users holding 3 open positions each on the live match's starters, and 50
trading clients paced to 1,000 opens and 1,000 closes a second for --seconds.

Prints one JSON object: open and close p50/p95/p99 (ms, client side), opens/s, errors; washouts
whose breach tick fell in the measured window and their delay (breach tick `at` to the
position's `closed_at`, both from Postgres, per washout: the margin_events row names the tick)
p50/p99/max; the flusher's lag p99 (as bench/trade.py); the WebSocket clients' tick-to-socket
latency (tick `at` in Postgres to the kernel's receive time) and ticks lost; CPU seconds and % of
one core per process kind over the measured window (from /proc: every process honcho started is
known by its HONCHO_PROCESS_NAME); and the machine.

    python -m bench.production [--seconds 60] [--users 50000] [--ws-clients 2000] \
        [--clients 50] [--rate 1000] [--speed 15] [--at-risk 0.05] [--at-risk-level 70]

Needs DATABASE_URL (its server gets a fresh `<name>_bench` database, as bench/trade.py) and
REDIS_URL only for that; it starts its own private Redis. The processes run with the Procfile's
own commands and counts under honcho (scripts/procs.py), the Dramatiq metrics ports moved to free
ones; `web` gets DISABLE_RATE_LIMIT=1 like every process (the bench clients share one address).

Shape of the load, and why:
- The holders are seeded the fast real way: rows COPYed into Postgres, then `recover` builds the
  hot state as `ftl recover` does. Each holds 1 lot on 3 of the 22 starters of the simulator's
  first match (which kicks off when the simulator starts), longs and shorts alternating per
  player so net lots stay near 0. Most users have 10 times their margin in cash; every
  1/--at-risk-th user starts at --at-risk-level % margin level, so a move of a few per cent
  against him breaches (≤ 50 %): live events move a player's price by 10-40 points (SPEC §1.3),
  which washes out the at-risk holders on the wrong side of that player.
- The traders trade other instruments than the live match's (0.01 lot, as bench/trade.py), so
  the WebSocket clients (5 of the 22 live players each) receive the live ticks and the washouts'
  trade ticks, not 2,000 trade ticks a second each: the clients share the cores with the servers.
- Before kick-off every holder is evaluated once (pre_match_pass), as a worker running before
  the match has: each has a safe box when the window opens.
- The window opens once the poller has seen the match live; at the default speed (15 match
  minutes a real minute) the first half lasts 3 real minutes, so setup plus 60 s stays in it.
- After the window the simulator stops (no new live ticks) and the bench waits for the margin
  queue and outbox to drain, so every washout of the window is in Postgres when counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvloop

from bench import recover as recover_bench
from bench import trade
from bench import ws as ws_bench
from ftl.core.config import Settings
from ftl.ops.recover import recover
from ftl.ops.scenarios import generate_scenario
from ftl.store import keys
from ftl.store.auth.tokens import generate_private_key_b64
from ftl.store.db.engine import libpq_url
from ftl.store.db.migrate import upgrade
from ftl.store.scripts import read_scripts
from ftl.store.services import Services
from ftl.store.ticks import TickSource
from ftl.trading.margin import evaluator
from workers.queues import NAMESPACE

SIM_SEED = 2026  # `ftl sim`'s default: the scenario `make run` plays
POSITIONS_PER_USER = 3
LOTS = 1
SAFE_CASH_TIMES_MARGIN = 10
TRADED_INSTRUMENTS = 20
START_TIMEOUT_S = 120
DRAIN_TIMEOUT_S = 60
DRAIN_POLL_S = 0.2
KINDS = ("web", "ws", "worker", "flusher", "clock", "poller")


@dataclass(frozen=True)
class Player:
    id: uuid.UUID
    idx: int
    price: int  # cents: the live base (the holders' net lots start at about 0)
    seq: int


# -- the holders


def live_players(pg: psycopg.Connection[Any]) -> list[Player]:
    """The starters of the simulator's first match, as seeded instruments."""
    fixture = generate_scenario(SIM_SEED).fixtures[0]
    starters = [p[0] for side in (fixture.home, fixture.away) for p in side.lineup[: side.starters]]
    rows = pg.execute(
        "SELECT id, idx, (live_base_price * 100)::bigint, seq FROM instruments"
        " WHERE sportmonks_player_id = ANY(%s) ORDER BY idx",
        (starters,),
    ).fetchall()
    return [Player(*row) for row in rows]


def opening_ticks(
    pg: psycopg.Connection[Any], players: list[Player], now: datetime
) -> list[Player]:
    """One tick per player a minute ago, its seq the holders' `openSeq`: in production every
    position opens on a trade tick that the tick log and `price_ticks` hold, so a replay starts
    inside the log (the seeded instruments have none: seq 0)."""
    pg.execute("SELECT ftl_ensure_price_ticks_partition(%s)", (now.date(),))
    opened = []
    for player in players:
        seq = player.seq + 1
        pg.execute(
            "INSERT INTO price_ticks (instrument_id, seq, at, price, live_base_price, net_lots,"
            " source) VALUES (%s, %s, %s, %s, %s, 0, %s)",
            (player.id, seq, now - timedelta(minutes=1), player.price / 100, player.price / 100,
             int(TickSource.TRADE)),
        )  # fmt: skip
        pg.execute("UPDATE instruments SET seq = %s WHERE id = %s", (seq, player.id))
        opened.append(Player(player.id, player.idx, player.price, seq))
    return opened


def seed_holders(
    database_url: str, users: int, at_risk: float, at_risk_level: float, rng: random.Random
) -> list[Player]:
    """USERS users, each holding LOTS lot on 3 live players (see the module's docstring); the
    live players."""
    now = datetime.now(UTC)
    every = max(1, round(1 / at_risk)) if at_risk else 0
    with psycopg.connect(libpq_url(database_url)) as pg:
        players = opening_ticks(pg, live_players(pg), now)
        held: dict[uuid.UUID, int] = defaultdict(
            int
        )  # positions per player so far: longs and shorts alternate
        user_ids = [uuid.uuid4() for _ in range(users)]
        recover_bench.copy_users(pg, user_ids)
        balances: list[float] = []
        with pg.cursor().copy(recover_bench.COPY_POSITIONS) as copy:
            for uid in user_ids:
                margin_cents = 0
                for k, player in enumerate(rng.sample(players, POSITIONS_PER_USER)):
                    direction = "long" if held[player.id] % 2 == 0 else "short"
                    held[player.id] += 1
                    margin = player.price * LOTS * 10  # cents: price × lots × 100 / leverage 10
                    margin_cents += margin
                    copy.write_row(
                        (uuid.uuid4(), uid, player.id, direction, LOTS, player.price / 100,
                         margin / 100, None, None, "open", None, None, None, f"o{k}",
                         player.seq, None, now - timedelta(minutes=1), None)
                    )  # fmt: skip
                at_risk_user = every and len(balances) % every == 0
                times = at_risk_level / 100 if at_risk_user else SAFE_CASH_TIMES_MARGIN
                balances.append(round(margin_cents * times) / 100)
        with pg.cursor().copy("COPY wallets (user_id, balance) FROM STDIN") as copy:
            for uid, balance in zip(user_ids, balances, strict=True):
                copy.write_row((uid, balance))
    return players


async def recover_hot_state(settings: Settings, traders: int) -> tuple[list[str], dict[str, Any]]:
    """The traders' accounts, then the hot state rebuilt from Postgres as `ftl recover` does;
    the traders' ids and what recover rebuilt."""
    services = Services.create(settings)
    try:
        users = await trade.make_traders(services, traders)
        started = time.monotonic()
        report = await recover(services)
    finally:
        await services.close()
    return users, {
        "wallets": report.wallets,
        "open_positions": report.positions,
        "recover_s": round(time.monotonic() - started, 1),
    }


async def pre_match_pass(settings: Settings, players: list[Player]) -> dict[str, Any]:
    """Every holder evaluated once before kick-off, as the flusher's trade passes evaluate them
    when they open before a match (docs/decisions/0045): a worker that has run since the
    positions were opened holds a safe box for each (0046), which `recover` deletes. Without it
    the window measures the first evaluation of 50,000 users at once, not a live match."""
    services = Services.create(settings)
    try:
        started = time.monotonic()
        holders = await evaluator.holders_of(services, (p.id for p in players))
        outcome = await evaluator.evaluate_pass(services, holders)
    finally:
        await services.close()
    return {
        "pre_match_evaluated": outcome.evaluated,
        "pre_match_washouts": outcome.closed,
        "pre_match_s": round(time.monotonic() - started, 1),
    }


# -- the processes


def start_simulator(stack: ExitStack, env: dict[str, str], speed: float) -> subprocess.Popen[bytes]:
    sim = subprocess.Popen(
        [str(trade.BIN / "ftl"), "sim", "sportmonks", "--speed", str(speed)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    stack.callback(trade.stop, sim)
    return sim


def wait_until(ready: Any, what: str, honcho: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with contextlib.suppress(httpx.TransportError):
            if ready():
                return
        if honcho.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} not ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


# -- CPU per process kind, from /proc


def processes() -> dict[int, tuple[int, float, str]]:
    """Every process: its parent, CPU seconds (its own and its reaped children's), and the
    honcho process name it inherited ('' for none)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            environ = b""
        name = ""
        if (at := environ.find(b"HONCHO_PROCESS_NAME=")) >= 0:
            name = environ[at + 20 : environ.find(b"\0", at)].decode().split(".")[0]
        cpu = sum(int(f) for f in fields[11:15]) / tick
        found[int(entry.name)] = (int(fields[1]), cpu, name)
    return found


def descendants(table: dict[int, tuple[int, float, str]], roots: set[int]) -> set[int]:
    tree = set(roots)
    grew = True
    while grew:
        more = {pid for pid, (ppid, _, _) in table.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def cpu_by_kind(roots: dict[str, set[int]]) -> dict[str, float]:
    """CPU seconds so far of every honcho kind, of each tree of `roots`, and of this process
    itself (counted with the bench clients: every other process here is its descendant)."""
    table = processes()
    cpu: dict[str, float] = defaultdict(float)
    for _, seconds, name in table.values():
        if name:
            cpu[name] += seconds
    for kind, pids in roots.items():
        cpu[kind] += sum(table[pid][1] for pid in descendants(table, pids) if pid in table)
    cpu["bench_clients"] += table[os.getpid()][1]
    return cpu


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {"cpu": model, "cores": os.cpu_count(), "load_average_before": os.getloadavg()}


# -- the run


async def redis_ms(services: Services) -> int:
    seconds, micros = await services.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def margin_backlog(services: Services) -> tuple[int, int]:
    """Margin messages waiting or running, and margin events waiting for Postgres."""
    pending = await services.redis.hlen(f"{NAMESPACE}:margin.msgs")
    return int(pending), int(await services.redis.xlen(keys.MARGIN_OUTBOX))


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat), whoever ran:
    on a shared machine, what the other tenants took shows against the sum of the kinds."""
    user, nice, system, _, _, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


WASHOUTS = """
SELECT extract(epoch FROM p.closed_at - t.at) * 1000
FROM margin_events e
JOIN cfd_positions p ON p.id = e.position_id
JOIN price_ticks t ON t.instrument_id = e.instrument_id AND t.seq = e.seq
WHERE e.kind = 'washout' AND t.at BETWEEN %(start)s AND %(end)s
"""
TICKS = """
SELECT i.idx, t.seq, extract(epoch FROM t.at)
FROM price_ticks t JOIN instruments i ON i.id = t.instrument_id
WHERE t.instrument_id = ANY(%(ids)s) AND t.at BETWEEN %(start)s AND %(end)s
"""


def from_postgres(
    database_url: str, players: list[Player], start_ms: int, end_ms: int
) -> tuple[list[float], dict[ws_bench.TickKey, float]]:
    """The delay (ms) of every washout whose breach tick fell in the window, and every tick of
    the live players in it ({(idx, seq): epoch s})."""
    window = {
        "start": datetime.fromtimestamp(start_ms / 1000, UTC),
        "end": datetime.fromtimestamp(end_ms / 1000, UTC),
        "ids": [p.id for p in players],
    }
    with psycopg.connect(libpq_url(database_url)) as pg:
        delays = [float(row[0]) for row in pg.execute(WASHOUTS, window)]
        ticks = {(idx, seq): float(at) for idx, seq, at in pg.execute(TICKS, window)}
    return delays, ticks


STALL_US = 1_000  # a command holding Redis this long delays every trade arriving meanwhile
STALLS_KEPT = 100_000
SCRIPT_NAMES = {script.sha: name for name, script in read_scripts().items()}


async def watch_stalls(services: Services) -> None:
    """From now on Redis keeps every command that held it STALL_US or longer (its SLOWLOG)."""
    await services.redis.config_set("slowlog-max-len", STALLS_KEPT)
    await services.redis.config_set("slowlog-log-slower-than", STALL_US)
    await services.redis.slowlog_reset()


async def redis_stalls(services: Services) -> dict[str, dict[str, float]]:
    """The commands that held Redis STALL_US or longer since watch_stalls, by name (a script by
    its first key's prefix): how many, the longest and the sum (ms)."""
    entries = await services.redis.slowlog_get(STALLS_KEPT)
    found: dict[str, list[float]] = defaultdict(list)
    for entry in entries:
        command = entry["command"]
        words = (command.decode() if isinstance(command, bytes) else command).split(" ", 6)
        name = words[0].upper()
        if name == "EVALSHA" and len(words) > 1:  # a script: by its name
            name = f"EVALSHA {SCRIPT_NAMES.get(words[1], words[1])}"
        elif len(words) > 1:  # FCALL by its function, any other command by its key's prefix
            name = f"{name} {words[1].split(':')[0]}"
        found[name].append(entry["duration"] / 1000)
    return {
        name: {"count": len(ms), "max_ms": round(max(ms), 1), "sum_ms": round(sum(ms), 1)}
        for name, ms in sorted(found.items(), key=lambda item: -sum(item[1]))
    }


@dataclass
class Run:
    settings: Settings
    args: argparse.Namespace
    url: str
    traders: list[str]
    players: list[Player]
    roots: dict[str, set[int]]
    sim: subprocess.Popen[bytes]
    controls: list[Connection]


async def measure(run: Run) -> dict[str, Any]:
    args = run.args
    services = Services.create(run.settings)
    try:
        members: set[str] = await services.redis.smembers(keys.INSTRUMENT_IDS)  # type: ignore[assignment]
        live = {str(p.id) for p in run.players}
        traded = sorted(members - live)[:TRADED_INSTRUMENTS]
        traders = trade.trading_clients(run.url, run.settings, run.traders, traded)
        await services.redis.delete(keys.FLUSH_LAG_SAMPLES)
        await watch_stalls(services)
        cpu_before = cpu_by_kind(run.roots)
        busy_before = machine_busy_s()
        start_ms = await redis_ms(services)
        elapsed = await trade.trade_for(traders, args.seconds, args.rate)
        end_ms = await redis_ms(services)
        cpu_after = cpu_by_kind(run.roots)
        stalls = await redis_stalls(services)
        busy_s = machine_busy_s() - busy_before
        trade.stop(run.sim)
        drain_started = time.monotonic()
        for _ in range(int(DRAIN_TIMEOUT_S / DRAIN_POLL_S)):
            if (backlog := await margin_backlog(services)) == (0, 0):
                break
            await asyncio.sleep(DRAIN_POLL_S)
        drain_s = time.monotonic() - drain_started
        lags = [float(x) for x in await services.redis.lrange(keys.FLUSH_LAG_SAMPLES, 0, -1)]
    finally:
        await services.close()
    delays, ticks = from_postgres(run.settings.database_url, run.players, start_ms, end_ms)
    for control in run.controls:
        control.send(ticks)
    results = [control.recv() for control in run.controls]
    arrived = sorted(ms for result in results for ms in result["arrived_ms"])
    delays.sort()
    wall = (end_ms - start_ms) / 1000
    cpu = {kind: cpu_after[kind] - cpu_before.get(kind, 0.0) for kind in cpu_after}
    figures = trade.trading_figures(traders, elapsed)
    return {
        "bench": "production",
        "seconds": round(elapsed, 1),
        "users": args.users,
        "ws_clients": args.ws_clients,
        "clients": args.clients,
        "paced_opens_per_s": args.rate,
        "sim_speed": args.speed,
        **figures,
        "washouts": len(delays),
        "washout_delay_ms": {
            "p50": trade.percentile(delays, 0.5),
            "p99": trade.percentile(delays, 0.99),
            "max": round(delays[-1], 1) if delays else None,
        },
        # NOTE: not (0, 0) when the drain timed out: washouts still unjudged or unwritten are
        # missing from the figures above, which are then a lower bound.
        "margin_drain_s": round(drain_s, 1),
        "margin_messages_left": backlog[0],
        "margin_outbox_left": backlog[1],
        "flush_lag_ms": trade.flush_lag_figures(lags),
        "live_ticks": len(ticks),
        "ws_ticks_expected": sum(result["expected"] for result in results),
        "ws_ticks_delivered": len(arrived),
        "ws_connections_lost": sum(result["lost"] for result in results),
        "tick_to_socket_ms": ws_bench.summary(arrived),
        "redis_stalls": stalls,
        "cpu_s": {kind: round(seconds, 1) for kind, seconds in sorted(cpu.items())},
        "cpu_percent_of_one_core": {
            kind: round(seconds / wall * 100, 1) for kind, seconds in sorted(cpu.items())
        },
        "machine_busy_percent_of_one_core": round(busy_s / wall * 100, 1),
    }


def postmaster_pid(database_url: str) -> int:
    with psycopg.connect(libpq_url(database_url)) as pg:
        backend = pg.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        return processes()[int(backend[0])][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--ws-clients", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=1_000.0, help="opens/s in all, paced")
    parser.add_argument("--speed", type=float, default=15.0, help="simulator: match min per min")
    parser.add_argument("--at-risk", type=float, default=0.05, help="share of users near breach")
    parser.add_argument(
        "--at-risk-level", type=float, default=70.0, help="their margin level at start, %%"
    )
    parser.add_argument("--client-processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    before = machine()
    env = dict(os.environ)
    env.setdefault("JWT_PRIVATE_KEY_B64", generate_private_key_b64())
    env["PATH"] = f"{trade.BIN}{os.pathsep}{env['PATH']}"  # the Procfile's `python` and `ftl`
    env.update(DISABLE_RATE_LIMIT="1", LOG_LEVEL="WARNING", ENV="development")
    workers: list[BaseProcess] = []
    controls: list[Connection] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="ftl-bench-") as scratch:
        stack.callback(ws_bench.stop_clients, workers)
        env["REDIS_URL"] = trade.start_redis(stack)
        env["DATABASE_URL"] = trade.fresh_database(env.get("DATABASE_URL", Settings().database_url))
        settings = Settings.from_env(env)
        upgrade(settings.database_url)
        asyncio.run(trade.seed_stores(settings))
        started = time.monotonic()
        players = seed_holders(
            settings.database_url,
            args.users,
            args.at_risk,
            args.at_risk_level,
            random.Random(args.seed),
        )
        users, rebuilt = asyncio.run(recover_hot_state(settings, args.clients))
        rebuilt["seed_s"] = round(time.monotonic() - started, 1)
        rebuilt.update(asyncio.run(pre_match_pass(settings, players)))
        print(f"bench: seeded and recovered {rebuilt}", file=sys.stderr)
        sim_port, web_port, ws_port = trade.free_port(), trade.free_port(), trade.free_port()
        env.update(
            SPORTMONKS_SIM_PORT=str(sim_port),
            SPORTMONKS_BASE_URL=f"http://127.0.0.1:{sim_port}/v3/football",
            WEB_PORT=str(web_port),
            WS_PORT=str(ws_port),
            WS_MAX_CONNECTIONS=str(max(args.ws_clients * 2, 10_000)),
        )
        # NOTE: the match kicks off as the simulator starts; the rest starts right after it.
        sim = start_simulator(stack, env, args.speed)
        log = Path(scratch) / "honcho.log"
        honcho = trade.start_procfile(stack, env, log, KINDS)
        url = f"http://127.0.0.1:{web_port}"
        wait_until(
            lambda: httpx.get(f"{url}/ready", timeout=1).status_code == 200, "web", honcho, log
        )
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{ws_port}/health", timeout=1).status_code == 200,
            "ws",
            honcho,
            log,
        )
        os.environ.update(env)  # NOTE: the client processes read their settings from it
        ws_bench.connect_clients(
            workers,
            controls,
            ws_bench.Audience(
                args.ws_clients, [ws_port], [p.idx for p in players], args.client_processes
            ),
            nofile=16_384,
            nice=0,
        )
        probe = Services.create(settings)

        async def live() -> bool:
            return (await probe.redis.get(keys.LIVE_FIXTURES)) not in (None, "[]")

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            wait_until(lambda: runner.run(live()), "a live match", honcho, log)
            runner.run(probe.close())
            redis_pid = int(runner.run(_redis_pid(settings)))
            roots = {
                "redis": {redis_pid},
                "postgres": {postmaster_pid(settings.database_url)},
                "simulator": {sim.pid},
                "bench_clients": {w.pid for w in workers if w.pid},
            }
            result = runner.run(
                measure(Run(settings, args, url, users, players, roots, sim, controls))
            )
    result["setup"] = rebuilt
    result["machine"] = before
    print(json.dumps(result))


async def _redis_pid(settings: Settings) -> int:
    services = Services.create(settings)
    try:
        info = await services.redis.info("server")
    finally:
        await services.close()
    return int(info["process_id"])


if __name__ == "__main__":
    main()
