"""The `ftl` command: every operator task has a subcommand with --help."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

from ftl.core import logs
from ftl.core.config import ConfigError, Settings, get_settings

if TYPE_CHECKING:
    from ftl.store.services import Services

T = TypeVar("T")
N = TypeVar("N", bound=float)


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Run one coroutine with the process's adapters, closing them afterwards."""
    # NOTE: imported here so `ftl --help` and `ftl migrate` load no Redis or engine code.
    from ftl.store.services import Services

    async def run() -> T:
        services = Services.create(settings)
        try:
            return await work(services)
        finally:
            await services.close()

    return asyncio.run(run())


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from ftl.store.db.migrate import downgrade, upgrade

    if args.downgrade:
        downgrade(settings.database_url, args.revision or "base")
    else:
        upgrade(settings.database_url, args.revision or "head")
    print(f"migrate: database at {args.revision or ('base' if args.downgrade else 'head')}")
    return 0


async def _seed(services: Services) -> int:
    settings = services.settings
    from ftl.ops.seed import seed

    report = await seed(services.engine, services.redis, admin_email=settings.admin_email)
    print(
        f"seed: {report.districts} districts, {report.instruments} instruments"
        f" ({report.new_instruments} new, {report.loaded_into_redis} loaded into Redis),"
        f" {report.fixtures} fixtures, admin {report.admin_email}"
    )
    return 0


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    return _with_services(settings, _seed)


async def _recover(services: Services) -> int:
    from ftl.ops.recover import recover

    report = await recover(services, progress=lambda line: print(line, flush=True))
    print(
        f"recover: done in {report.seconds:.2f} s: {report.instruments} instruments,"
        f" {report.wallets} wallets, {report.positions} open positions,"
        f" {report.board_members} board members, {report.ticks} ticks, {report.flags} flags"
    )
    return 0


def cmd_recover(settings: Settings, args: argparse.Namespace) -> int:
    async def run(services: Services) -> int:
        from ftl.ops.health import hot_state_lost

        if args.if_lost and not await hot_state_lost(services):
            print("recover: Redis holds the hot state of every sampled wallet; nothing to do")
            return 0
        return await _recover(services)

    return _with_services(settings, run)


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from ftl.ops import audit

    acknowledged = (
        audit.read_acknowledged(args.acknowledged.read_text().splitlines())
        if args.acknowledged
        else []
    )

    async def run(services: Services) -> int:
        # NOTE: hot and durable state only agree once the outbox is drained (decision 0070).
        if args.wait_flush and not await audit.wait_for_flush(services.redis, args.wait_flush):
            backlog = await audit.outbox_backlog(services.redis)
            return _fail(
                f"audit: the outbox still holds {backlog} entries after {args.wait_flush:g} s;"
                " is a flusher running? (--wait-flush 0 audits anyway)"
            )
        report = await audit.audit(services, acknowledged)
        for violation in report.violations:
            print(violation.line())
        print(report.summary(), file=sys.stderr)
        return 1 if report.violations else 0

    return _with_services(settings, run)


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    # NOTE: settings were validated above, so a misconfigured production fails here in one line
    # instead of inside every gunicorn worker.
    from ftl.core import multiproc

    # NOTE: each copy of the Procfile kind on its own port (decision 0143); gunicorn's bind
    # reads it from the settings, which read the environment.
    port = multiproc.copy_port(settings.web_port)
    os.environ["WEB_PORT"] = str(port)
    # NOTE: set before gunicorn imports prometheus_client, so every worker writes its figures
    # where GET /metrics merges them (decision 0060).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc.fresh_dir("web", port)
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:web.gunicorn_conf",
        "web.app:create_app()",
    ]
    os.execv(sys.executable, argv)  # noqa: S606 - replace this process with gunicorn


def cmd_ws(settings: Settings, args: argparse.Namespace) -> int:
    from ftl.core import multiproc
    from ftl.store.auth.tokens import Tokens

    # NOTE: fail here in one line if the token key is unusable, before the server starts.
    Tokens(settings.jwt_private_key_b64, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    os.environ["WS_PORT"] = str(multiproc.copy_port(settings.ws_port))  # decision 0143
    argv = [sys.executable, "-m", "web.ws"]
    os.execv(sys.executable, argv)  # noqa: S606 - replace this process with the ws server


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from ftl.store.auth.tokens import generate_private_key_b64

    print(f"JWT_PRIVATE_KEY_B64={generate_private_key_b64()}")
    return 0


def cmd_sim(settings: Settings, args: argparse.Namespace) -> int:
    from ftl.ops.scenarios import generate_scenario, load_scenario, resume_state
    from ftl.ops.simulator import API_PREFIX, Simulator, make_server

    scenario = load_scenario(args.scenario) if args.scenario else generate_scenario(args.seed)
    played_s = 0.0
    if args.resume is not None:
        key = f"{args.scenario or args.seed}@{args.speed:g}"
        played_s = resume_state(args.resume, key, scenario, args.speed, time.time())
    simulator = Simulator(
        scenario, speed=args.speed, api_token=settings.sportmonks_api_token, played_s=played_s
    )
    port = settings.sportmonks_sim_port if args.port is None else args.port
    server = make_server(simulator, "127.0.0.1", port)
    print(
        f"sim sportmonks: {len(scenario.fixtures)} fixtures at {args.speed:g}x;"
        f" SPORTMONKS_BASE_URL=http://127.0.0.1:{server.server_address[1]}{API_PREFIX}",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _speed(raw: str) -> float:
    speed = float(raw)
    if not 0 < speed <= 100_000:
        raise argparse.ArgumentTypeError("speed must be above 0 and at most 100000")
    return speed


def cmd_bots(settings: Settings, args: argparse.Namespace) -> int:
    # APPSEC: synthetic traders exist for development and demos; production has no dev sign-in.
    if settings.is_production:
        return _fail("bots: synthetic traders are off in production (ENV=production)")
    from ftl.ops.bots import run_bots

    asyncio.run(
        run_bots(
            args.url or settings.public_url,
            args.count,
            args.rate,
            turns=args.turns,
            seed=args.seed,
            source_address=args.source_address,
        )
    )
    return 0


def _bounded(kind: Callable[[str], N], low: N, high: N) -> Callable[[str], N]:
    """An argparse type: a number read by `kind`, from `low` to `high`."""

    def parse(raw: str) -> N:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {raw}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}")
        return value

    return parse


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    from ftl.ops.dev_google import DevGoogleIssuer
    from ftl.store.auth.google import google_audience

    port = settings.google_dev_port if args.port is None else args.port
    if args.mint:
        # NOTE: the running issuer holds the key, so minting asks it over loopback.
        body = {"email": args.mint, "nonce": args.nonce, "aud": args.aud}
        reply = httpx.post(
            f"http://127.0.0.1:{port}/mint",
            json={k: v for k, v in body.items() if v is not None},
            timeout=5,
        )
        reply.raise_for_status()
        print(reply.json()["idToken"])
        return 0
    issuer = DevGoogleIssuer(port=port, client_id=google_audience(settings))
    print(
        f"dev google: GOOGLE_JWKS_URL={issuer.jwks_url} (audience {issuer.client_id});"
        f" mint with POST {issuer.url}/mint {{email, nonce}} or `ftl dev google --mint EMAIL`",
        flush=True,
    )
    try:
        issuer.server.serve_forever()
    finally:
        issuer.server.server_close()
    return 0


def _moment(raw: str) -> datetime:
    """An ISO-8601 instant; one without an offset is read as UTC."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {raw}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // total if total else width
    end = "\n" if done == total else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr)


async def _user_exists(services: Services, user_id: UUID) -> bool:
    from ftl.accounts.users import get_account

    return await get_account(services.engine, user_id) is not None


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from workers.margin import replay_user

    since = args.since.isoformat() if args.since else None
    if args.scope == "margin":
        if args.user_id is None:
            return _fail("replay margin: give the USER_ID")
        if not _with_services(settings, lambda services: _user_exists(services, args.user_id)):
            return _fail(f"replay margin: no user {args.user_id}")
        replay_user.send(str(args.user_id), since)
        print(f"replay: margin replay of {args.user_id} enqueued")
        return 0
    if args.user_id is not None or since is None:
        return _fail("replay all: takes --since and no USER_ID")
    from ftl.trading.margin.snapshots import users_with_open_positions

    users = _with_services(settings, users_with_open_positions)
    for done, user_id in enumerate(users, start=1):
        replay_user.send(str(user_id), since)
        if done % 100 == 0 or done == len(users):
            _progress(done, len(users))
    print(f"replay: margin replays of {len(users)} users with open positions enqueued")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[Settings, argparse.Namespace], int]]] = {
    "migrate": ("apply the database migrations (the release step)", cmd_migrate),
    "seed": ("load districts, the demo World Cup squads, fixtures, flags and an admin", cmd_seed),
    "recover": (
        "rebuild every Redis hot key from Postgres after Redis was lost (run with writers"
        " stopped; idempotent)",
        cmd_recover,
    ),
    "audit": (
        "check the invariants between Redis and Postgres and print every violation (exit 1);"
        " waits for the flusher to drain the outbox first",
        cmd_audit,
    ),
    "keys": ("print a new RS256 signing key as JWT_PRIVATE_KEY_B64=... (development)", cmd_keys),
    "web": ("serve the HTTP API (gunicorn + uvicorn workers)", cmd_web),
    "sim": ("serve a local Sportmonks simulator: `ftl sim sportmonks`", cmd_sim),
    "ws": ("serve the WebSocket fan-out (prices and portfolio frames)", cmd_ws),
    "bots": (
        "synthetic traders that move the demo market through the API (not in production)",
        cmd_bots,
    ),
    "dev": ("development tools: `ftl dev google`, a local Google ID-token issuer", cmd_dev),
    "replay": (
        "enqueue margin replays: `ftl replay margin USER_ID [--since ISO]`,"
        " `ftl replay all --since ISO`",
        cmd_replay,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftl", description="FTL (Football Trade League) backend.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, _) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=summary)
        if name == "migrate":
            command.add_argument("revision", nargs="?", help="target revision (default: head)")
            command.add_argument("--downgrade", action="store_true", help="go down to REVISION")
        if name == "sim":
            command.add_argument("feed", choices=["sportmonks"], help="the feed to simulate")
            command.add_argument(
                "--speed", type=_speed, default=60.0, help="match minutes per real minute (60)"
            )
            command.add_argument("--port", type=int, help="port (default: SPORTMONKS_SIM_PORT)")
            command.add_argument("--seed", type=int, default=2026, help="seed of generated matches")
            command.add_argument("--scenario", type=Path, help="play this recorded scenario JSON")
            command.add_argument(
                "--resume",
                type=Path,
                help="state file: a restart resumes the matches by the clock, never replays them",
            )
        if name == "bots":
            command.add_argument(
                "--count", type=_bounded(int, 1, 1000), default=20, help="how many bots (20)"
            )
            command.add_argument(
                "--rate",
                type=_bounded(float, 0.01, 1000.0),
                default=1.0,
                help="trades per second, all bots together (1)",
            )
            command.add_argument("--url", help="base URL of the API (default: PUBLIC_URL)")
            command.add_argument(
                "--turns", type=_bounded(int, 1, 10**9), help="stop after this many trades"
            )
            command.add_argument("--seed", type=int, help="seed of the bots' choices")
            command.add_argument(
                "--source-address",
                metavar="IP",
                help="local address to connect from, so the bots are a client of their own to the"
                " per-IP rate limits (make run: 127.0.0.2)",
            )
        if name == "dev":
            command.add_argument("tool", choices=["google"], help="the tool to run")
            command.add_argument("--port", type=int, help="port (default: GOOGLE_DEV_PORT)")
            command.add_argument("--mint", metavar="EMAIL", help="print an ID token for EMAIL")
            command.add_argument("--nonce", help="the nonce claim of the minted token")
            command.add_argument("--aud", help="the audience of the minted token")
        if name == "recover":
            command.add_argument(
                "--if-lost",
                action="store_true",
                help="only when Redis lacks wallets that Postgres holds (make run starts with it)",
            )
        if name == "audit":
            command.add_argument(
                "--wait-flush",
                type=_bounded(float, 0.0, 3600.0),
                default=10.0,
                metavar="SECONDS",
                help="wait up to this long for the outbox to drain, else exit 2 (0: do not wait)",
            )
            command.add_argument(
                "--acknowledged",
                type=Path,
                metavar="FILE",
                help="JSON lines {userId, positionId, openRequestId, closeRequestId?}: trades"
                " clients were answered for, each checked to be in Postgres once",
            )
        if name == "replay":
            command.add_argument("scope", choices=["margin", "all"], help="one user or everyone")
            command.add_argument("user_id", nargs="?", type=UUID, help="the user (scope margin)")
            command.add_argument(
                "--since",
                type=_moment,
                help="ISO-8601: where to start instruments a user has no watermark for",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "keys":
        # NOTE: making a key needs no settings; production refuses to start without one.
        return cmd_keys(Settings(), args)
    try:
        settings = get_settings()
    except ConfigError as exc:
        return _fail(str(exc))
    # NOTE: a command speaks through its own lines; libraries' INFO chatter would bury them (and
    # the one-line failure), so it logs warnings and worse unless LOG_LEVEL asks for more.
    quiet = (
        settings.log_level if settings.log_level in ("DEBUG", "ERROR", "CRITICAL") else "WARNING"
    )
    logs.setup_unless_configured(quiet)
    _, run = COMMANDS[args.command]
    try:
        return run(settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the operator gets one line, not a traceback
        return _fail(f"{args.command}: {_one_line(exc)}")


if __name__ == "__main__":
    sys.exit(main())
