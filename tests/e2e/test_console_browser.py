"""The live console in headless Chromium against the processes `make run` starts (the Procfile,
the Sportmonks simulator and the bots): a newcomer opens /console, signs in, sees prices tick
during a simulated match, opens a position, watches its PnL move and sees it closed at full time.

Chromium and its driver come from Debian (`scripts/browser.sh`, run by `make test`). A screenshot
of the console at full time is saved under .var/test-artifacts/ (of the page as it was, if the
test fails), with the log of every process beside it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import httpx
import msgpack
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.conftest import START_TIMEOUT_S, WebProcess, free_port, run_ftl

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / ".var" / "test-artifacts"
SCENARIO = ROOT / "tests" / "fixtures" / "sportmonks" / "console_match.json"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Match minutes per real minute: kick-off to full time (105 simulated minutes) in 26 s, and the
# fixture stays listed as finished for 3.75 s, enough for two polls 2 s apart to see it.
SIM_SPEED = 240
# The scenario gives him a key pass every 8 minutes: +18.90 each, up to 477.50 at minute 83, so
# his price climbs all match long without reaching the 500.00 cap.
PLAYER = "Leandro Paredes"
EVENT_WAIT_S = 30  # the longest the page may take to show one thing the match makes happen
FULL_TIME_WAIT_S = 60
PROCESSES = ("web", "ws", "worker", "poller", "flusher")  # started before the match; clock after
STOP_WAIT_S = 10


def procfile() -> dict[str, str]:
    """The Procfile's processes: name -> shell command, each metrics port moved to a free one (so
    the test runs beside `make run` or another test)."""
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if re.match(r"^[a-z]+:", line):
            name, command = line.split(":", 1)
            entries[name] = re.sub(
                r"\bMETRICS_PORT=\d+", lambda _: f"METRICS_PORT={free_port()}", command.strip()
            )
    return entries


@dataclass
class Stack:
    """Processes started in their own sessions (so a shell's children stop with it)."""

    env: Mapping[str, str]
    logs: Path
    processes: dict[str, tuple[subprocess.Popen[bytes], IO[bytes]]]

    def start(self, name: str, command: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command,
            shell=True,  # NOTE: the Procfile's own command lines, as honcho runs them
            env=dict(self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = (process, log)
        return process

    def wait_for(self, name: str, url: str) -> None:
        """Until `url` answers; the process's log if it stops or never answers."""
        process, _ = self.processes[name]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                log = (self.logs / f"{name}.log").read_text(errors="replace")
                raise AssertionError(f"{name} did not start: {log[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to every process group; SIGKILL to whatever is left of a group after
        STOP_WAIT_S. NOTE: a left-over poller would keep polling the test Redis (and trip the
        shared breaker) long after the test."""
        for process, _ in self.processes.values():
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for process, log in self.processes.values():
            while time.monotonic() < deadline:
                process.poll()  # NOTE: reaps the shell, which would otherwise keep its group alive
                if not _signal_group(process.pid, 0):
                    break
                time.sleep(0.1)
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            log.close()


def _signal_group(group: int, number: int) -> bool:
    """Send a signal to a process group; False when the group has no process left."""
    try:
        os.killpg(group, number)
    except ProcessLookupError:
        return False
    return True


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.TransportError:
        return False


@dataclass
class Demo:
    url: str  # the web process
    stack: Stack


@pytest.fixture
def demo(schema: str, clean: None) -> Iterator[Demo]:
    """What `make run` runs, on free ports: seeded stores, the Procfile's processes and the bots,
    then the simulator playing one match from its kick-off, then the clock that polls it."""
    seeded = run_ftl("seed")
    assert seeded.returncode == 0, seeded.stderr
    web_port, ws_port, sim_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "WEB_PORT": str(web_port),
        "WEB_CONCURRENCY": "1",
        "WS_PORT": str(ws_port),
        "SPORTMONKS_SIM_PORT": str(sim_port),
        "SPORTMONKS_BASE_URL": f"http://127.0.0.1:{sim_port}/v3/football",
        "SPORTMONKS_API_TOKEN": "",
    }
    logs = ARTEFACTS / "console-browser-logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(env, logs, {})
    url = f"http://127.0.0.1:{web_port}"
    commands = procfile()
    try:
        for name in PROCESSES:
            stack.start(name, commands[name])
        stack.start("bots", f"ftl bots --count 5 --rate 2 --seed 9 --url {url}")
        stack.wait_for("web", f"{url}/health")
        stack.wait_for("ws", f"http://127.0.0.1:{ws_port}/health")
        stack.start("sim", f"ftl sim sportmonks --scenario {SCENARIO} --speed {SIM_SPEED}")
        stack.wait_for("sim", f"{env['SPORTMONKS_BASE_URL']}/livescores/inplay")
        stack.start("clock", commands["clock"])
        yield Demo(url, stack)
    finally:
        stack.stop()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not CHROMEDRIVER.exists():
        pytest.fail(f"{CHROMEDRIVER} is missing: run scripts/browser.sh (make test does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # NOTE: CI containers run as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def text(driver: WebDriver, css: str) -> str:
    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""  # not there yet, or re-rendered under us: the next poll reads it again


def wait_until(
    driver: WebDriver, what: str, check: Callable[[], Any], limit_s: float = EVENT_WAIT_S
) -> Any:
    return WebDriverWait(driver, limit_s, poll_frequency=0.1).until(
        lambda _: check(), message=f"the console never showed {what}"
    )


def shown_points(driver: WebDriver, css: str) -> Decimal | None:
    """The points an element shows, or None while it shows none (not rendered yet)."""
    shown = text(driver, css).replace(",", "")
    try:
        return Decimal(shown) if shown else None
    except ArithmeticError:
        return None


def test_a_newcomer_trades_through_a_simulated_match(demo: Demo, browser: webdriver.Chrome) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    passed = False
    try:
        browser.get(f"{demo.url}/console")
        wait_until(browser, "the match clock", lambda: text(browser, "#clock").startswith("ARG"))
        browser.find_element(By.ID, "display-name").send_keys("Newcomer")
        browser.find_element(By.ID, "signin-button").click()
        wait_until(browser, "who is signed in", lambda: text(browser, "#me-name") == "Newcomer")
        wait_until(browser, "the live feed", lambda: text(browser, "#connection") == "live")
        wait_until(browser, "a live minute", lambda: "′" in text(browser, "#clock"))

        paredes = next(
            r
            for r in browser.find_elements(By.CSS_SELECTOR, "#instruments tbody tr")
            if r.find_element(By.CSS_SELECTOR, ".name").text == PLAYER
        )
        idx = paredes.get_attribute("data-idx")
        price_cell = f"#instruments tr[data-idx='{idx}'] .price"
        before = text(browser, price_cell)
        wait_until(browser, "a price tick", lambda: int(text(browser, "#tick-count")) > 0)
        wait_until(browser, f"{PLAYER}'s price move", lambda: text(browser, price_cell) != before)

        browser.find_element(By.CSS_SELECTOR, f"#instruments tr[data-idx='{idx}'] .buy").click()
        # NOTE: every check below is the wait's own condition, and a value used later is the one
        # the wait saw: the page re-renders on every frame, so a second read may catch it between
        # two renders (once seen: the text present for the wait, '' for the assert after it).
        wait_until(
            browser,
            f"the open position in {PLAYER}",
            lambda: text(browser, "#open-positions tbody tr .name") == PLAYER,
        )
        wait_until(browser, "a margin level", lambda: text(browser, "#margin-level").endswith("%"))
        # A one-tuple, so that a PnL of exactly 0.00 counts as shown.
        (opened_pnl,) = wait_until(
            browser,
            "the open position's PnL",
            lambda: (
                (pnl,)
                if (pnl := shown_points(browser, "#open-positions .pnl")) is not None
                else None
            ),
        )
        # NOTE: his next key pass adds 18.90 to the price, 1,890.00 to the PnL of one lot; the
        # bots' trades move it by cents, so only a live move passes this mark.
        wait_until(
            browser,
            "the PnL move with his price",
            lambda: (shown_points(browser, "#open-positions .pnl") or 0) > opened_pnl + 100,
        )
        wait_until(
            browser,
            "a positive unrealised PnL",
            lambda: (shown_points(browser, "#unrealized-pnl") or 0) > 0,
        )

        closed_by = "#closed-positions tbody tr .closed-by"
        wait_until(
            browser,
            "the close at full time",
            lambda: text(browser, closed_by) == "auto_exit_ft",
            FULL_TIME_WAIT_S,
        )
        wait_until(browser, "full time", lambda: "full time" in text(browser, "#clock"))
        wait_until(
            browser,
            "no open positions",
            lambda: not browser.find_elements(By.CSS_SELECTOR, "#open-positions tbody tr"),
        )
        wait_until(
            browser,
            "no margin level without open positions",
            lambda: text(browser, "#margin-level") == "–",
        )
        wait_until(
            browser,
            "a profit on the closed position",
            lambda: (shown_points(browser, "#closed-positions .pnl") or 0) > 0,
        )
        wait_until(
            browser,
            "a positive realised PnL",
            lambda: (shown_points(browser, "#realized-pnl") or 0) > 0,
        )
        wait_until(browser, "me on the leaderboard", lambda: "Newcomer" in text(browser, "#board"))
        logged = browser.get_log("browser")  # type: ignore[no-untyped-call]
        errors = [e for e in logged if e["level"] == "SEVERE"]
        assert not errors, f"script, CSP or network errors in the page: {errors}"
        browser.save_screenshot(str(ARTEFACTS / "console-browser.png"))
        passed = True
    finally:
        if not passed:
            browser.save_screenshot(str(ARTEFACTS / "console-browser-failure.png"))


def test_the_console_decodes_every_msgpack_type_a_frame_can_hold(
    web: WebProcess, browser: WebDriver
) -> None:
    frames: list[Any] = [
        {"i": 7, "p": 123.45, "s": 1, "q": 1},
        {"i": 300, "p": 5.0, "s": 0, "q": 70_000, "d": 1},
        [{"i": 1, "p": 1.0, "s": 4, "q": 2**32 + 5}, {"i": 65_535, "p": 499.99, "s": 2, "q": 3}],
        {"text": "é" * 40, "long": "x" * 300, "neg": [-1, -200, -40_000, -(2**40)], "n": None},
        list(range(20)),
        {str(n): n for n in range(20)},
        [True, False, 0.5, 2**53 - 1],
    ]
    browser.get(f"{web.url}/console")
    decoded = browser.execute_async_script(
        """
        const [frames, done] = arguments;
        import("/console/msgpack.js").then(({ decode }) => {
          const out = frames.map((hex) => decode(Uint8Array.from(
            hex.match(/../g).map((b) => parseInt(b, 16)))));
          let refused = "";
          try { decode(new Uint8Array([0xc1])); } catch (e) { refused = e.message; }
          done({ out, refused });
        });
        """,
        [msgpack.packb(frame).hex() for frame in frames],
    )
    assert decoded["out"] == frames
    assert "unsupported type 0xc1" in decoded["refused"]
