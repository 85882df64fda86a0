"""`ftl sim sportmonks` as a real process: it serves the seeded fixtures in the Sportmonks shape
that the client parses, and refuses bad options."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import httpx
import pytest

from ftl.sportmonks.client import SportmonksClient
from ftl.sportmonks.payload import MatchPhase
from tests.e2e.conftest import FTL, START_TIMEOUT_S, free_port, run_ftl

pytestmark = pytest.mark.e2e


def test_sim_help_and_bad_options() -> None:
    helped = run_ftl("sim", "sportmonks", "--help")
    assert helped.returncode == 0
    for option in ("--speed", "--port", "--seed", "--scenario"):
        assert option in helped.stdout
    assert run_ftl("sim", "sportmonks", "--speed", "0").returncode == 2
    assert run_ftl("sim", "cricket").returncode == 2


def test_the_simulator_process_plays_seeded_matches() -> None:
    port = free_port()
    env = {**os.environ, "SPORTMONKS_API_TOKEN": ""}
    process = subprocess.Popen(
        [FTL, "sim", "sportmonks", "--port", str(port), "--speed", "600", "--seed", "7"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}/v3/football"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                httpx.get(f"{base_url}/livescores/inplay", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    errors = process.stderr.read() if process.stderr else b""
                    raise AssertionError(f"ftl sim did not start: {errors!r}") from None
                time.sleep(0.1)
        fixtures = asyncio.run(_inplay(base_url))
        assert fixtures, "the first generated fixture kicks off at once"
        assert fixtures[0][0] == 19000001 and fixtures[0][1] is MatchPhase.LIVE
        assert fixtures[0][2] == 46, "both seeded squads, with their Sportmonks ids"
    finally:
        process.terminate()
        process.wait(timeout=15)
        process.stderr.close()  # type: ignore[union-attr]


async def _inplay(base_url: str) -> list[tuple[int, MatchPhase, int]]:
    client = SportmonksClient(base_url, "")
    try:
        return [(f.fixture_id, f.phase, len(f.players)) for f in await client.inplay()]
    finally:
        await client.aclose()
