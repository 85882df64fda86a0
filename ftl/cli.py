"""The `ftl` command: every operator task has a subcommand with --help."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable

from ftl.config import ConfigError, Settings, get_settings


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from ftl.db.migrate import downgrade, upgrade

    if args.downgrade:
        downgrade(settings.database_url, args.revision or "base")
    else:
        upgrade(settings.database_url, args.revision or "head")
    print(f"migrate: database at {args.revision or ('base' if args.downgrade else 'head')}")
    return 0


async def _seed(settings: Settings) -> int:
    from ftl.seed import seed
    from ftl.services import Services

    services = Services.create(settings)
    try:
        report = await seed(services.engine, services.redis, admin_email=settings.admin_email)
    finally:
        await services.close()
    print(
        f"seed: {report.districts} districts, {report.instruments} instruments"
        f" ({report.new_instruments} new, {report.loaded_into_redis} loaded into Redis),"
        f" {report.fixtures} fixtures, admin {report.admin_email}"
    )
    return 0


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_seed(settings))


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    # NOTE: settings were validated above, so a misconfigured production fails here in one line
    # instead of inside every gunicorn worker.
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:web.gunicorn_conf",
        "web.app:create_app()",
    ]
    os.execv(sys.executable, argv)  # noqa: S606 - replace this process with gunicorn


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from ftl.auth.tokens import generate_private_key_b64

    print(f"JWT_PRIVATE_KEY_B64={generate_private_key_b64()}")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[Settings, argparse.Namespace], int]]] = {
    "migrate": ("apply the database migrations (the release step)", cmd_migrate),
    "seed": ("load districts, the demo World Cup squads, fixtures, flags and an admin", cmd_seed),
    "keys": ("print a new RS256 signing key as JWT_PRIVATE_KEY_B64=... (development)", cmd_keys),
    "web": ("serve the HTTP API (gunicorn + uvicorn workers)", cmd_web),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftl", description="FTL (Football Trade League) backend.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, _) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=summary)
        if name == "migrate":
            command.add_argument("revision", nargs="?", help="target revision (default: head)")
            command.add_argument("--downgrade", action="store_true", help="go down to REVISION")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ConfigError as exc:
        return _fail(str(exc))
    _, run = COMMANDS[args.command]
    try:
        return run(settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the operator gets one line, not a traceback
        return _fail(f"{args.command}: {_one_line(exc)}")


if __name__ == "__main__":
    sys.exit(main())
