"""A recorded match for the real simulator on loopback, played on a hand-driven clock (the
fixtures `clock`, `sim_url` and `market` live in tests/integration/conftest.py)."""

from __future__ import annotations

from pathlib import Path

SCENARIO = Path(__file__).resolve().parents[1] / "fixtures" / "sportmonks" / "scripted_match.json"
SPEED = 600.0  # ten match minutes per real second


class Clock:
    def __init__(self) -> None:
        self.seconds = 0.0

    def at_minute(self, elapsed_match_minutes: float) -> None:
        self.seconds = elapsed_match_minutes * 60 / SPEED
