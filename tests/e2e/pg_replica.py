"""PostgreSQL clusters the replica, restart and disaster tests own: a primary (crash_stack's
PrivatePostgres), a streaming replica of it made with pg_basebackup, the primary's backups
(scripts/backup.sh) and a cluster restored from them (scripts/restore.sh); each on a free
loopback port and run as the `postgres` OS user when the tests run as root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from uuid import UUID

import psycopg

from ftl.ops.flush import Flusher
from ftl.store.services import Services
from ftl.trading import trades
from tests.e2e.conftest import free_port
from tests.e2e.crash_stack import PG_OS_USER, PrivatePostgres, wait_until


def as_postgres(bindir: str, tool: str, *args: str) -> None:
    # NOTE: pg_ctl may be a symlink on PATH; the other server tools sit beside its target.
    argv = [str(Path(bindir, "pg_ctl").resolve().with_name(tool)), *args]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", PG_OS_USER, "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, f"{tool} failed: {done.stderr}"


def restart(pg: PrivatePostgres) -> None:
    """`pg_ctl restart -m fast`: sessions are cut, the cluster is back when this returns."""
    log = str(pg.dir / "pg.log")
    as_postgres(pg.bindir, "pg_ctl", "-D", str(pg.data), "-l", log, "-m", "fast", "-w", "restart")


class Replica(PrivatePostgres):
    """A hot standby streaming from `primary` (pg_basebackup -R writes its primary_conninfo):
    a private cluster made by copying the primary instead of initdb."""

    def __init__(self, primary: PrivatePostgres) -> None:
        self.bindir = primary.bindir
        self.dir = Path(tempfile.mkdtemp(prefix="ftl-replica-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, PG_OS_USER)
        as_postgres(
            self.bindir, "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port),
            "-U", "postgres", "-D", str(self.data), "-R", "-X", "stream", "-c", "fast",
            "--no-sync",
        )  # fmt: skip
        with (self.data / "postgresql.auto.conf").open("a") as conf:  # later lines win
            conf.write(
                f"port = {self.port}\nunix_socket_directories = '{self.dir}'\n"
                "application_name = 'ftl-replica'\n"
            )
        self.start()

    def start(self) -> None:
        super().start()
        wait_until(self.streaming, "the replica to stream from its primary")

    def streaming(self) -> bool:
        try:
            with psycopg.connect(self.libpq(), connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'"
                ).fetchone()
        except psycopg.OperationalError:
            return False
        return row == (1,)

    def sql(self, statement: str) -> None:
        with psycopg.connect(self.libpq(), autocommit=True) as conn:
            conn.execute(statement)


SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def archive_wal(pg: PrivatePostgres, *, timeout_s: int) -> Path:
    """Archive `pg`'s WAL through scripts/backup.sh into a new backup directory (a restart: the
    archive mode is read at start); a finished segment is archived at most `timeout_s` late.
    NOTE: the directory lives in the cluster's own, so it goes with the cluster's cleanup."""
    backups = pg.dir / "backups"
    (backups / "wal").mkdir(parents=True)
    if os.geteuid() == 0:
        for directory in (backups, backups / "wal"):
            shutil.chown(directory, PG_OS_USER)
    with (pg.data / "postgresql.auto.conf").open("a") as conf:
        conf.write(
            f"archive_mode = on\narchive_timeout = {timeout_s}\n"
            f"archive_command = '{SCRIPTS}/backup.sh wal %p %f {backups}'\n"
        )
    restart(pg)
    return backups


def base_backup(pg: PrivatePostgres, backups: Path) -> None:
    done = subprocess.run(
        [str(SCRIPTS / "backup.sh"), "base", str(backups)],
        env={**os.environ, "DATABASE_URL": pg.libpq()},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


class WalStream:
    """`scripts/backup.sh stream` (pg_receivewal --synchronous) from `pg` into `backups`."""

    def __init__(self, pg: PrivatePostgres, backups: Path) -> None:
        self.pg = pg
        self.process = subprocess.Popen(
            [str(SCRIPTS / "backup.sh"), "stream", str(backups)],
            env={**os.environ, "DATABASE_URL": pg.libpq()},
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self._flushed_behind() is not None, "pg_receivewal to connect")

    def _flushed_behind(self) -> int | None:
        """Bytes of WAL the primary has written that the stream has not yet on disk."""
        with psycopg.connect(self.pg.libpq()) as conn:
            row = conn.execute(
                "SELECT pg_current_wal_lsn() - flush_lsn FROM pg_stat_replication"
                " WHERE application_name = 'pg_receivewal'"
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def wait_caught_up(self) -> None:
        wait_until(lambda: self._flushed_behind() == 0, "the stream to hold all the WAL")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=30)


def crash(pg: PrivatePostgres) -> None:
    """The machine is gone: stop with no checkpoint and nothing more archived."""
    as_postgres(pg.bindir, "pg_ctl", "-D", str(pg.data), "-m", "immediate", "-w", "stop")


class Restored:
    """scripts/restore.sh run onto an empty data directory: the cluster it left running, and
    the JSON summary it printed (auditExit 0: `ftl audit` was clean)."""

    def __init__(self, bindir: str, backups: Path, redis_url: str) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="ftl-restored-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, PG_OS_USER)
        self.data = self.dir / "data"
        self.port = free_port()
        done = subprocess.run(
            [str(SCRIPTS / "restore.sh"), str(backups), str(self.data), str(self.port)],
            env={**os.environ, "REDIS_URL": redis_url},
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.log = done.stderr
        self.summary: dict[str, object] = (
            json.loads(done.stdout.splitlines()[-1]) if done.stdout.strip() else {}
        )

    def libpq(self) -> str:
        return f"postgresql://ftl@127.0.0.1:{self.port}/ftl"

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            as_postgres(self.bindir, "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


async def open_flushed(services: Services, user: UUID, instrument: UUID, request_id: str) -> str:
    """Open 0.1 lot long at about 100 and flush it to the primary (a position row, one tick);
    the position's id."""
    order = trades.OpenOrder.of(
        instrument_id=instrument,
        direction=1,
        lot_size=0.1,
        client_request_id=request_id,
        client_price=100,
        slippage_tolerance=0.05,
        stop_loss=None,
        take_profit=None,
    )
    opened = await trades.open_position(services, trades.Caller(user, "j"), order)
    await Flusher(services, "pg-tests").flush()
    position_id: str = json.loads(opened)["position"]["id"]
    return position_id
