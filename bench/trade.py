"""Trading over HTTP under load (SPEC §8): 50 concurrent clients open and close positions
against `web` for a fixed time, each user already holding 19 open positions (20 with the one
being traded), with the flusher and the clock draining to Postgres meanwhile (and, with
--margin-worker, the worker's margin passes after trade ticks, docs/decisions/0047).

Prints one JSON object: open and close latency p50/p95/p99 (ms, client side), opens/s and
requests/s, errors, the client's own CPU per request, the server-side time per Lua call (EVALSHA
and FCALL) from INFO commandstats, and the flusher's lag (tick to Postgres commit, worst tick per
batch) p50/p99/max.

    python -m bench.trade [--seconds 20] [--clients 50] [--rate OPENS_PER_S] [--url URL] \
        [--margin-worker]

Closed loop by default (each client sends its next request when the last is answered: the
figures are the saturation point, latency = clients / throughput); `--rate` paces the clients to
that many opens per second in all (each followed by its close), for latency at a given load.
Latency is measured from the send, so a paced run that falls behind shows as lower throughput.

Without --url it starts a private Redis (so INFO commandstats counts only this benchmark) and a
fresh database `<DATABASE_URL's name>_bench` on the same server (migrated and seeded), then
`ftl web` (WEB_CONCURRENCY=2, DISABLE_RATE_LIMIT=1) on a free port, and the flusher and the clock
(and the worker) with the Procfile's own commands under honcho (LOG_LEVEL=WARNING unless set),
and stops them all at the end. With --url they must
already run there, with the same stores and JWT_PRIVATE_KEY_B64.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import uvloop
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from ftl.core.config import Settings
from ftl.ops.seed import seed
from ftl.store import keys
from ftl.store.auth.tokens import Tokens, TokenType, generate_private_key_b64
from ftl.store.db.engine import libpq_url
from ftl.store.db.migrate import upgrade
from ftl.store.db.models import User, Wallet
from ftl.store.services import Services

HOLDINGS = 19  # open positions per user before the clock starts
LOT_SIZE = 0.01
_request_ids = itertools.count()
RUN_ID = secrets.token_hex(4)
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 30
ROOT = Path(__file__).resolve().parents[1]
HONCHO_STOP_S = 40


def open_body(instrument: str) -> bytes:
    """The body of an open request (PERF: an f-string, not json.dumps: the client shares the
    cores with the server)."""
    return (
        f'{{"instrumentId":"{instrument}","direction":"long","lotSize":{LOT_SIZE},'
        f'"clientRequestId":"{request_id()}","clientPrice":1000,"slippageTolerancePct":0.05}}'
    ).encode()


def request_id() -> str:
    """A clientRequestId no other request of this run (nor of an earlier run) uses."""
    return f"{RUN_ID}-{next(_request_ids)}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))], 3)


def latency(samples: list[float]) -> dict[str, float]:
    """p50, p95 and p99 of `samples`."""
    return {p: percentile(samples, q) for p, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def start_redis(stack: ExitStack, *options: str) -> str:
    """A private redis-server with `options` besides the product's; its URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
            *options,
        ],
        stdout=subprocess.DEVNULL,
    )
    stack.callback(process.wait, 15)
    stack.callback(process.terminate)
    return f"redis://127.0.0.1:{port}/0"


def fresh_database(database_url: str, suffix: str = "_bench") -> str:
    """`<name><suffix>` dropped and created again on the server of `database_url`; its URL."""
    url = make_url(database_url)
    name = f"{url.database}{suffix}"
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        drop_database(conn, name)
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop database `name` (its sessions ended) through an autocommit connection to another."""
    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def procfile(path: Path) -> None:
    """The Procfile as it is, every METRICS_PORT moved to a free port (another `make run` on this
    machine holds the Procfile's own)."""
    text = (ROOT / "Procfile").read_text()
    path.write_text(re.sub(r"\bMETRICS_PORT=\d+", lambda _: f"METRICS_PORT={free_port()}", text))


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=HONCHO_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def start_procfile(
    stack: ExitStack, env: dict[str, str], log: Path, kinds: Sequence[str]
) -> subprocess.Popen[bytes]:
    """These Procfile processes under honcho, with the Procfile's own commands, as `make run`
    starts them (scripts/procs.py); stopped when `stack` closes."""
    path = log.with_name("Procfile")
    procfile(path)
    with log.open("wb") as out:
        honcho = subprocess.Popen(
            [sys.executable, "scripts/procs.py", "start", "-f", str(path), "-d", str(ROOT), *kinds],
            cwd=ROOT,
            env={**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(stop, honcho)
    return honcho


def start_processes(stack: ExitStack, env: dict[str, str], *, margin_worker: bool) -> str:
    """web (2 workers, no rate limits), the flusher and the clock (and the worker) with the
    Procfile's commands; the URL of web once it is ready."""
    port = free_port()
    env = {
        "LOG_LEVEL": "WARNING",  # NOTE: honcho relays every line; a request log each is its CPU
        **env,
        "WEB_PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "DISABLE_RATE_LIMIT": "1",
    }
    scratch = Path(tempfile.mkdtemp(prefix="ftl-bench-"))
    stack.callback(shutil.rmtree, scratch, True)
    kinds = ("web", "flusher", "clock", *(("worker",) if margin_worker else ()))
    start_procfile(stack, env, scratch / "honcho.log", kinds)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("bench: ftl web did not become ready")


async def seed_stores(settings: Settings) -> None:
    """Districts, the demo squads and their hot state (idempotent)."""
    services = Services.create(settings)
    try:
        await seed(services.engine, services.redis, admin_email=settings.admin_email)
    finally:
        await services.close()


async def make_traders(services: Services, count: int) -> list[str]:
    """Synthetic users with wallets deep enough that margin never limits the benchmark."""
    users = [
        {
            "id": uuid.uuid4(),
            "first_name": "Bench",
            "display_name": f"Bench {n}",
            "district_id": 1 + n % 14,
            "referral_code": secrets.token_hex(4),
            "is_synthetic": True,
        }
        for n in range(count)
    ]
    async with services.engine.begin() as conn:
        await conn.execute(insert(User).values(users))
        await conn.execute(
            insert(Wallet).values([{"user_id": u["id"], "balance": 1_000_000} for u in users])
        )
    return [str(u["id"]) for u in users]


class Connection:
    """One keep-alive HTTP/1.1 connection, hand-rolled: httpx would spend more CPU per request
    than the server does, on the same two cores, and the figures would measure the client.

    PERF: a response head is read in one `readuntil` and only its Content-Length is looked at.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, headers: str, body: bytes = b""
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        response_head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        start = response_head.find(b"\r\ncontent-length:")
        end = response_head.find(b"\r", start + 2)
        length = 0 if start < 0 else int(response_head[start + 17 : end])
        payload = await self.reader.readexactly(length)
        return int(response_head[9:12]), payload


class Client:
    def __init__(self, connection: Connection, token: str, instruments: list[str]) -> None:
        self.connection = connection
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.instruments = instruments
        self.requests = 0
        self.open_ms: list[float] = []
        self.close_ms: list[float] = []
        self.errors: dict[str, int] = {}

    def _error(self, status: int, payload: bytes) -> None:
        try:
            code = str(json.loads(payload)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            code = f"http_{status}"
        self.errors[code] = self.errors.get(code, 0) + 1

    async def open(self, instrument: str) -> str | None:
        self.requests += 1
        body = open_body(instrument)
        start = time.perf_counter()
        status, payload = await self.connection.request(
            "POST",
            "/api/positions/open",
            self.auth + "Content-Type: application/json\r\n",
            body,
        )
        elapsed = (time.perf_counter() - start) * 1000
        if status != 201:
            self._error(status, payload)
            return None
        self.open_ms.append(elapsed)
        position_id: str = json.loads(payload)["position"]["id"]
        return position_id

    async def close(self, position_id: str) -> None:
        self.requests += 1
        start = time.perf_counter()
        status, payload = await self.connection.request(
            "DELETE",
            f"/api/positions/{position_id}?clientRequestId={request_id()}",
            self.auth,
        )
        elapsed = (time.perf_counter() - start) * 1000
        if status != 200:
            self._error(status, payload)
            return
        self.close_ms.append(elapsed)

    async def run_until(self, deadline: float, interval_s: float, offset_s: float) -> None:
        """Open and close one position after another; with `interval_s`, start a pair every
        interval (paced, from `offset_s` on, so clients do not all send at once) instead of as
        fast as the server answers."""
        n = 0
        due = time.monotonic() + offset_s
        while time.monotonic() < deadline:
            if interval_s:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                due += interval_s
            position_id = await self.open(self.instruments[n % len(self.instruments)])
            n += 1
            if position_id is not None:
                await self.close(position_id)


def trading_clients(
    url: str, settings: Settings, users: list[str], instrument_ids: list[str]
) -> list[Client]:
    """One client per user, each on its own keep-alive connection to `url`."""
    tokens = Tokens(
        settings.jwt_private_key_b64, issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    server = urlsplit(url)
    return [
        Client(
            Connection(server.hostname or "127.0.0.1", server.port or 80),
            tokens.issue(TokenType.ACCESS, user)[0],
            instrument_ids,
        )
        for user in users
    ]


async def trade_for(traders: list[Client], seconds: float, rate: float) -> float:
    """Every trader opens and closes until `seconds` are over (paced to `rate` opens/s in all,
    or closed loop with 0); the seconds it took."""
    started = time.monotonic()
    interval_s = len(traders) / rate if rate else 0.0
    await asyncio.gather(
        *(
            t.run_until(started + seconds, interval_s, interval_s * n / len(traders))
            for n, t in enumerate(traders)
        )
    )
    return time.monotonic() - started


def trading_figures(traders: list[Client], elapsed: float) -> dict[str, Any]:
    """Opens, closes, their rates, latency percentiles (ms) and errors by code."""
    open_ms = [x for t in traders for x in t.open_ms]
    close_ms = [x for t in traders for x in t.close_ms]
    errors: dict[str, int] = {}
    for trader in traders:
        for code, count in trader.errors.items():
            errors[code] = errors.get(code, 0) + count
    return {
        "opens": len(open_ms),
        "closes": len(close_ms),
        "opens_per_s": round(len(open_ms) / elapsed, 1),
        "requests_per_s": round(sum(t.requests for t in traders) / elapsed, 1),
        "errors": errors,
        "open_ms": latency(open_ms),
        "close_ms": latency(close_ms),
    }


def flush_lag_figures(lags: list[float]) -> dict[str, float]:
    """The flusher's lag samples (FLUSH_LAG_SAMPLES, ms): batches, p50, p99, max."""
    return {
        "batches": len(lags),
        "p50": percentile(lags, 0.5),
        "p99": percentile(lags, 0.99),
        "max": max(lags, default=0.0),
    }


async def bench(
    url: str, settings: Settings, seconds: float, clients: int, rate: float
) -> dict[str, Any]:
    services = Services.create(settings)
    try:
        members: set[str] = await services.redis.smembers(keys.INSTRUMENT_IDS)  # type: ignore[assignment]
        instrument_ids = sorted(members)[: HOLDINGS + 1]
        users = await make_traders(services, clients)
        traders = trading_clients(url, settings, users, instrument_ids)

        async def hold(trader: Client) -> None:
            for iid in instrument_ids[:HOLDINGS]:
                await trader.open(iid)

        await asyncio.gather(*(hold(t) for t in traders))
        for trader in traders:
            trader.open_ms.clear()
            trader.requests = 0
        await services.redis.config_resetstat()
        await services.redis.delete(keys.FLUSH_LAG_SAMPLES)
        client_cpu_started = time.process_time()
        elapsed = await trade_for(traders, seconds, rate)
        client_cpu_s = time.process_time() - client_cpu_started
        await asyncio.sleep(1)  # the last batches reach Postgres
        stats = await services.redis.info("commandstats")
        lags = [float(x) for x in await services.redis.lrange(keys.FLUSH_LAG_SAMPLES, 0, -1)]
    finally:
        await services.close()
    # NOTE: the trade scripts run as Redis Functions (FCALL), the others by EVALSHA.
    lua = [stats.get(f"cmdstat_{command}", {}) for command in ("evalsha", "fcall")]
    lua_calls = sum(int(c.get("calls", 0)) for c in lua)
    lua_usec = sum(float(c.get("usec", 0)) for c in lua)
    figures = trading_figures(traders, elapsed)
    return {
        "bench": "trade",
        "clients": clients,
        "paced_opens_per_s": rate or None,
        "seconds": round(elapsed, 1),
        "open_positions_per_user": HOLDINGS + 1,
        **{k: figures[k] for k in ("opens", "closes", "opens_per_s", "requests_per_s", "errors")},
        # NOTE: what the benchmark's own client costs the shared cores, per request.
        "client_cpu_us_per_request": round(
            client_cpu_s * 1e6 / max(1, sum(t.requests for t in traders)), 1
        ),
        "open_ms": figures["open_ms"],
        "close_ms": figures["close_ms"],
        "lua_usec_per_call": round(lua_usec / lua_calls, 2) if lua_calls else None,
        "lua_calls": lua_calls,
        "flush_lag_ms": flush_lag_figures(lags),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="opens/s in all, paced (default: as fast as possible)",
    )
    parser.add_argument("--url", help="a running web (default: start web, flusher and clock)")
    parser.add_argument(
        "--margin-worker",
        action="store_true",
        help="also start the worker, whose margin passes after trade ticks share the cores",
    )
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("JWT_PRIVATE_KEY_B64", generate_private_key_b64())
    with ExitStack() as stack:
        if args.url is None:
            env["REDIS_URL"] = start_redis(stack)
            env["DATABASE_URL"] = fresh_database(env.get("DATABASE_URL", Settings().database_url))
            settings = Settings.from_env(env)
            upgrade(settings.database_url)
            # NOTE: before `web` starts: its /ready waits for the instruments' hot state.
            asyncio.run(seed_stores(settings))
            url = start_processes(stack, env, margin_worker=args.margin_worker)
        else:
            settings = Settings.from_env(env)
            asyncio.run(seed_stores(settings))
            url = args.url
        # PERF: uvloop (uvicorn's) spends less CPU per request than asyncio's own loop.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(bench(url, settings, args.seconds, args.clients, args.rate))
    result["margin_worker"] = args.margin_worker
    print(json.dumps(result))


if __name__ == "__main__":
    main()
