"""A whole FTL deployment the crash tests own and may kill piece by piece: a private PostgreSQL
cluster (initdb in a temporary directory, as scripts/services.sh does), a private redis-server,
and the Procfile's processes (web, ws, worker, flusher, clock, run as the Procfile says), each in
its own process group so a SIGKILL reaches its children too."""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
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

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ftl-crash-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

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
             *aof, "--maxmemory-policy", "noeviction", "--dir", str(self.dir)],
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
            executable = Path(sys.executable).with_name(words[0])
            words[0] = str(executable) if executable.exists() else words[0]
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


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
