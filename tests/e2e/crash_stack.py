"""A whole FTL deployment the crash tests own and may kill piece by piece: a private PostgreSQL
cluster (initdb in a temporary directory, as scripts/services.sh does), a private redis-server,
and the Procfile's processes (web, ws, worker, flusher, clock, run as the Procfile says), each in
its own process group so a SIGKILL reaches its children too."""

from __future__ import annotations

import asyncio
import glob
import itertools
import json
import os
import pwd
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
import redis

from tests.e2e.conftest import FTL, START_TIMEOUT_S, free_port

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"
PG_OS_USER = "postgres"  # the postmaster refuses to run as root


def pg_bindir() -> str | None:
    """Where initdb and pg_ctl live (Debian keeps them off PATH), or None when there are none
    (or, as root, no `postgres` user to run them as)."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            return None
    on_path = shutil.which("pg_ctl")
    candidates = ([str(Path(on_path).parent)] if on_path else []) + sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), reverse=True
    )
    for directory in candidates:
        if Path(directory, "initdb").exists() and Path(directory, "pg_ctl").exists():
            return directory
    return None


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", PG_OS_USER, "--", *argv] if os.geteuid() == 0 else argv


def wait_until(
    check: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S, poll_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(poll_s)


class PrivatePostgres:
    """A throwaway cluster on a free loopback port (fsync off: tests only)."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="ftl-crash-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, PG_OS_USER)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        (self.data / "postgresql.auto.conf").write_text(
            f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.dir}'\nfsync = off\nfull_page_writes = off\n"
        )
        self.start()
        with psycopg.connect(self.libpq("postgres", "postgres"), autocommit=True) as conn:
            conn.execute("CREATE ROLE ftl LOGIN SUPERUSER")
            conn.execute("CREATE DATABASE ftl OWNER ftl")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            _as_postgres([f"{self.bindir}/{tool}", *args]),
            check=True,
            capture_output=True,
            cwd="/",
        )

    def libpq(self, user: str = "ftl", database: str = "ftl") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://ftl@127.0.0.1:{self.port}/ftl"

    def start(self) -> None:
        log = str(self.dir / "pg.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server of our own (noeviction, no persistence: SPEC §2) that the test may kill."""

    def __init__(self, options: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ftl-crash-redis-"))
        self.options = list(options)  # more redis-server options, on every start
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> tuple[str, str]:
        return "127.0.0.1", str(self.port)

    def start(self, *, appendonly: bool = False) -> None:
        """Start on the same port and directory: with `appendonly`, reload the AOF written there
        (fsync every second), else start empty."""
        aof = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if appendonly
            else ["--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *aof, "--maxmemory-policy", "noeviction", "--dir", str(self.dir), *self.options],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, "redis-server")
        client.close()

    def switch_on_aof(self) -> None:
        """Turn on the append-only file at run time and wait until its first rewrite is done."""
        client = redis.Redis.from_url(self.url, decode_responses=True)
        client.config_set("appendonly", "yes")
        client.config_set("appendfsync", "everysec")

        def written() -> bool:
            info = client.info("persistence")
            return bool(
                info["aof_enabled"]
                and not info["aof_rewrite_in_progress"]
                and not info["aof_rewrite_scheduled"]
            )

        wait_until(written, "the first AOF rewrite")
        client.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def destroy(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Stack:
    """The stores and the running processes by Procfile name."""

    pg: PrivatePostgres
    redis: PrivateRedis
    env: dict[str, str]
    web_port: int = field(default_factory=free_port)
    ws_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def command(self, name: str) -> tuple[list[str], dict[str, str]]:
        """The Procfile's command of `name`: its argv (the virtualenv's executables) and the
        variables it sets, each `*_PORT` of them moved to a free port (tests run in parallel)."""
        for line in PROCFILE.read_text().splitlines():
            process, _, command = line.partition(":")
            if process.strip() != name:
                continue
            words = shlex.split(command)
            env: dict[str, str] = {}
            while "=" in words[0]:
                variable, _, value = words.pop(0).partition("=")
                env[variable] = str(free_port()) if variable.endswith("_PORT") else value
            # NOTE: background kinds run under `nice -n N` (docs/decisions/0161): the
            # executable to resolve is the word after it.
            at = 3 if words[0] == "nice" else 0
            executable = Path(sys.executable).with_name(words[at])
            words[at] = str(executable) if executable.exists() else words[at]
            return words, env
        raise AssertionError(f"no {name} in the Procfile")

    def start(self, name: str) -> None:
        argv, extra = self.command(name)
        self.processes[name] = subprocess.Popen(
            argv,
            env={**self.env, **extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # NOTE: its own process group: SIGKILL reaches the children
        )
        port = {"web": self.web_port, "ws": self.ws_port}.get(name)
        if port is not None:
            wait_until(lambda: _healthy(port), f"{name} to answer /health")

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.kill(name)

    def ftl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FTL, *args], env=self.env, capture_output=True, text=True, timeout=120
        )


def required_pg_bindir() -> str:
    """Where initdb and pg_ctl live; the test is skipped where there are none (it owns its
    PostgreSQL clusters)."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("no initdb/pg_ctl (or postgres user): this test owns its PostgreSQL")
    return bindir


def deployed(
    pg: PrivatePostgres, redis_node: PrivateRedis, web_concurrency: int, **env: str
) -> Stack:
    """A Stack on these stores (and `env` on top of the process's own), migrated and seeded,
    no process started yet; the poller has no feed."""
    stack = Stack(
        pg,
        redis_node,
        {
            **os.environ,
            "DATABASE_URL": pg.url,
            "REDIS_URL": redis_node.url,
            "SPORTMONKS_BASE_URL": "http://127.0.0.1:9/v3/football",  # NOTE: no feed: no poller
            "WEB_CONCURRENCY": str(web_concurrency),
            **env,
        },
    )
    stack.env.update(WEB_PORT=str(stack.web_port), WS_PORT=str(stack.ws_port))
    for step in (("migrate",), ("seed",)):
        done = stack.ftl(*step)
        assert done.returncode == 0, done.stderr
    return stack


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


TRADERS = 8
LOTS = 0.1
RETRY_PAUSE_S = 0.1  # between retries of an unanswered request
THINK_S = 0.05  # between one trader's requests
STEP_ANSWERS = 40  # answered requests the load makes between two steps of a case


@dataclass
class Trader:
    user_id: str
    headers: dict[str, str]
    open_ids: list[str] = field(default_factory=list)


class Load:
    """TRADERS clients opening and closing small positions over HTTP. A request without an
    answer (connection refused, 5xx) is retried with the same clientRequestId until it gets
    one; a 2xx is acknowledged and recorded."""

    def __init__(self, base_url: str, traders: list[Trader], instruments: list[dict[str, Any]]):
        self.base_url = base_url
        self.traders = traders
        self.instruments = instruments
        self.acknowledged: dict[str, dict[str, str]] = {}  # position id -> the audit's JSON line
        self.answers = 0
        self.unanswered = 0  # attempts that got no answer or a 5xx (retried)
        self.refused = 0  # of which a 503 with Retry-After
        self.statuses: dict[int, int] = {}
        self.in_flight = 0
        self.running = threading.Event()
        self.stopping = False
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self.running.set()
        self._thread.start()

    def stop(self) -> None:
        self.stopping = True
        self.running.set()
        self._thread.join(timeout=60)

    def pause(self) -> None:
        """No new requests; those in flight are retried until answered."""
        self.running.clear()
        wait_until(lambda: self.in_flight == 0, "the load's requests in flight to be answered", 60)

    def resume(self) -> None:
        self.running.set()

    def wait_answers(self, count: int = STEP_ANSWERS) -> None:
        target = self.answers + count
        wait_until(lambda: self.answers >= target, f"{count} more answers", 60)

    def acknowledged_lines(self) -> str:
        with self._lock:
            return "\n".join(json.dumps(a) for a in self.acknowledged.values())

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            await asyncio.gather(*(self._trade(client, t) for t in self.traders))

    async def _trade(self, client: httpx.AsyncClient, trader: Trader) -> None:
        while not self.stopping:
            if not self.running.is_set():
                await asyncio.sleep(0.02)
                continue
            self.in_flight += 1
            try:
                if len(trader.open_ids) >= 2:
                    await self._close(client, trader)
                else:
                    await self._open(client, trader)
            finally:
                self.in_flight -= 1
            await asyncio.sleep(THINK_S)

    async def _answered(self, client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> Any:
        while True:
            try:
                response = await client.request(method, url, **kw)
                self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
                if response.status_code < 500:
                    self.answers += 1
                    return response
                if response.status_code == 503 and "Retry-After" in response.headers:
                    self.refused += 1
            except httpx.TransportError:
                pass
            self.unanswered += 1
            await asyncio.sleep(RETRY_PAUSE_S)

    async def _open(self, client: httpx.AsyncClient, trader: Trader) -> None:
        instrument = random.choice(self.instruments)
        request_id = f"o-{next(self._ids)}"
        body = {
            "instrumentId": instrument["id"],
            "direction": random.choice(["long", "short"]),
            "lotSize": LOTS,
            "clientRequestId": request_id,
            "clientPrice": instrument["price"],
            "slippageTolerancePct": 0.05,
        }
        response = await self._answered(
            client, "POST", "/api/positions/open", json=body, headers=trader.headers
        )
        if response.status_code // 100 == 2:
            position = response.json()["position"]
            instrument["price"] = position["entryPrice"]
            trader.open_ids.append(position["id"])
            with self._lock:
                self.acknowledged[position["id"]] = {
                    "userId": trader.user_id,
                    "positionId": position["id"],
                    "openRequestId": request_id,
                }
        elif response.json()["error"]["code"] == "slippage_exceeded":
            quote = await self._answered(client, "GET", f"/api/instruments/{instrument['id']}")
            instrument["price"] = quote.json()["price"]

    async def _close(self, client: httpx.AsyncClient, trader: Trader) -> None:
        position_id = trader.open_ids[0]
        request_id = f"c-{next(self._ids)}"
        response = await self._answered(
            client,
            "DELETE",
            f"/api/positions/{position_id}",
            params={"clientRequestId": request_id},
            headers=trader.headers,
        )
        code = None if response.status_code // 100 == 2 else response.json()["error"]["code"]
        if code is None:
            with self._lock:
                self.acknowledged[position_id]["closeRequestId"] = request_id
        if code in (None, "position_closed"):  # closed by us, or by full time / a washout
            trader.open_ids.remove(position_id)


def settle_and_audit_load(stack: Stack, load: Load, tmp: Path) -> None:
    """Stop new requests, let every retry get its answer, then `ftl audit` with the
    acknowledged trades; and Postgres holds exactly the positions the clients were answered
    for (none doubled by a retry, none the clients never heard of)."""
    load.pause()
    try:
        acknowledged = tmp / "acknowledged.jsonl"
        acknowledged.write_text(load.acknowledged_lines())
        audited = stack.ftl("audit", "--wait-flush", "30", "--acknowledged", str(acknowledged))
        assert audited.returncode == 0, audited.stdout + audited.stderr
        with psycopg.connect(stack.pg.libpq(), autocommit=True) as conn:
            stored = {
                (str(r[0]), str(r[1]), r[2])
                for r in conn.execute(
                    "SELECT p.id, p.user_id, p.open_request_id FROM cfd_positions p"
                    " JOIN users u ON u.id = p.user_id WHERE u.display_name LIKE 'crash-%%'"
                )
            }
        answered = {
            (a["positionId"], a["userId"], a["openRequestId"]) for a in load.acknowledged.values()
        }
        assert stored == answered
    finally:
        load.resume()


def start_trading(stack: Stack) -> tuple[Load, UUID, list[dict[str, Any]]]:
    """TRADERS new users trading two instruments of each of the first two fixtures, until the
    first STEP_ANSWERS answers; the load, the first fixture and its two instruments."""
    with psycopg.connect(stack.pg.libpq(), autocommit=True) as conn:
        row = conn.execute("SELECT id FROM fixtures ORDER BY kickoff_at, id LIMIT 2").fetchall()
    fixture_id, other_fixture = row[0][0], row[1][0]
    batch = httpx.post(
        f"{stack.web_url}/api/auth/dev/batch",
        json={"count": TRADERS, "prefix": "crash-"},
        timeout=30,
    )
    assert batch.status_code == 200, batch.text
    traders = [
        Trader(u["user"]["id"], {"Authorization": f"Bearer {u['accessToken']}"})
        for u in batch.json()["users"]
    ]
    chosen = []
    for fixture in (fixture_id, other_fixture):
        listed = httpx.get(
            f"{stack.web_url}/api/instruments", params={"fixtureId": str(fixture)}, timeout=10
        ).json()["instruments"]
        chosen.append([{"id": i["id"], "idx": i["idx"], "price": i["price"]} for i in listed[:2]])
    load = Load(stack.web_url, traders, chosen[0] + chosen[1])
    load.start()
    load.wait_answers()
    return load, fixture_id, chosen[0]


MASTER_NAME = "ftl"
SENTINELS = 3
DOWN_AFTER_MS = 1_000  # a primary silent this long is down for a sentinel
FAILOVER_TIMEOUT_MS = 5_000
# NOTE: as production runs (docs/operations.md): a primary without a replica refuses writes.
# A node that comes back syncs at once (Redis 7 waits 5 s for more replicas by default).
REPLICATED = [
    "--min-replicas-to-write", "1", "--min-replicas-max-lag", "10",
    "--repl-diskless-sync-delay", "0",
]  # fmt: skip


class SentinelRedis:
    """A primary, its replica and three sentinels (quorum 2) watching them, on free ports."""

    def __init__(self) -> None:
        self.nodes = [PrivateRedis(REPLICATED)]
        self.nodes.append(PrivateRedis([*REPLICATED, "--replicaof", *self.nodes[0].address]))
        self.sentinel_ports = [free_port() for _ in range(SENTINELS)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.dir = Path(tempfile.mkdtemp(prefix="ftl-sentinels-"))
        wait_until(lambda: self.replicas_of(self.nodes[0]) == 1, "the replica to sync")
        host, port = self.nodes[0].address
        for n, sentinel_port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{n}.conf"  # NOTE: a sentinel rewrites its own file
            conf.write_text(
                f"port {sentinel_port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {MASTER_NAME} {host} {port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL
                )
            )
        wait_until(
            self._sentinels_see_each_other, "the sentinels to find each other and the replica"
        )

    @property
    def env(self) -> dict[str, str]:
        return {
            # NOTE: nothing listens there: a client that ignored the sentinels would fail at once.
            "REDIS_URL": "redis://127.0.0.1:9/0",
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
            "REDIS_MASTER_NAME": MASTER_NAME,
            "REDIS_WAIT_REPLICAS": "1",
            "REDIS_WAIT_TIMEOUT_MS": "500",
        }

    def sentinel(self, n: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[n], decode_responses=True, socket_timeout=1)

    def primary(self) -> tuple[str, int] | None:
        """The primary as the first sentinel names it now."""
        with self.sentinel() as client:
            address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        return None if address is None else (str(address[0]), int(address[1]))

    def node_at(self, address: tuple[str, int]) -> PrivateRedis:
        return next(node for node in self.nodes if node.port == address[1])

    @staticmethod
    def replicas_of(node: PrivateRedis) -> int:
        try:
            with redis.Redis(port=node.port, decode_responses=True, socket_timeout=1) as client:
                info = client.info("replication")
        except redis.RedisError:
            return 0
        online = [
            value
            for name, value in info.items()
            if name.startswith("slave") and isinstance(value, dict)
        ]
        return sum(1 for replica in online if replica.get("state") == "online")

    def _sentinels_see_each_other(self) -> bool:
        for n in range(SENTINELS):
            try:
                with self.sentinel(n) as client:
                    state = client.sentinel_master(MASTER_NAME)
            except redis.RedisError:
                return False
            if state["num-other-sentinels"] < SENTINELS - 1 or state["num-slaves"] < 1:
                return False
        return True

    def destroy(self) -> None:
        for process in self.sentinels:
            process.kill()
            process.wait(timeout=10)
        for node in self.nodes:
            node.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)
