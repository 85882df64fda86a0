"""Instants as the API writes them (SPEC §3): ISO 8601 in UTC, to the millisecond, with a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_ms(ms: str | int) -> str:
    """`iso` of milliseconds since the epoch (as hot state keeps them)."""
    return iso(datetime.fromtimestamp(int(ms) / 1000, UTC))
