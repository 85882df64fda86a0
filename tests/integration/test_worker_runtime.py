"""Workers alike (workers/runtime.py, docs/decisions/0140): one broker set up by the runtime, one
way to the adapters, and no enqueue that blocks an actor's event loop."""

from __future__ import annotations

import ast
import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from workers import margin, runtime

WORKERS = Path(runtime.__file__).parent


class WhereEnqueued(Middleware):
    """Records, for each message enqueued, whether its thread was running an event loop."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool, int]] = []

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int
    ) -> None:
        try:
            asyncio.get_running_loop()
            on_a_loop = True
        except RuntimeError:
            on_a_loop = False
        self.seen.append((message.actor_name, on_a_loop, threading.get_ident()))


async def test_enqueueing_from_async_code_happens_off_the_event_loop(clean: None) -> None:
    broker = runtime.broker()
    where = WhereEnqueued()
    broker.add_middleware(where)
    user = str(uuid.uuid4())
    try:
        await runtime.enqueue(margin.replay_user, user)
        await runtime.enqueue(margin.evaluate_instruments, [user], delay=60_000)
        margin.replay_user.send(user)  # NOTE: what the actors used to do: on the loop
    finally:
        broker.middleware.remove(where)
    loop_thread = threading.get_ident()
    (first, second, blocking) = where.seen
    assert first[:2] == ("replay_user", False) and first[2] != loop_thread
    assert second[:2] == ("evaluate_instruments", False) and second[2] != loop_thread
    assert blocking == ("replay_user", True, loop_thread)  # the record tells the two apart


def actor_modules() -> list[Path]:
    return [path for path in WORKERS.glob("*.py") if path.stem != "runtime"]


def test_no_async_code_of_workers_calls_send_itself() -> None:
    """`.send()` inside an `async def` would block its loop: every such send goes through
    `runtime.enqueue`."""
    found = []
    for path in actor_modules():
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"send", "send_with_options"}
                ):
                    found.append(f"{path.name}:{node.lineno}")
    assert found == []


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            modules |= {a.name for a in node.names}
    return modules


def test_every_actor_reaches_the_adapters_through_the_runtime() -> None:
    makers = {"Services", "create_engine", "from_url", "connect", "connect_blocking"}
    found = []
    for path in actor_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                name = node.func.id
            else:
                continue
            if name in makers or name == "create":
                found.append(f"{path.name} {name}")
    # NOTE: the broker's own client, the clock's lease client and the /metrics process's Redis are
    # not actors' adapters.
    assert sorted(found) == [
        "broker.py connect_blocking",
        "clock.py connect_blocking",
        "metrics.py connect_blocking",
    ]


def test_the_broker_and_the_metrics_do_not_import_each_other() -> None:
    assert not {m for m in imported_modules(WORKERS / "broker.py") if "workers.metrics" in m}
    assert not {m for m in imported_modules(WORKERS / "metrics.py") if "workers.broker" in m}
