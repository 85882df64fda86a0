"""The directory where the processes of one launcher (`ftl web`, `python -m workers`) keep their
Prometheus figures, so that one /metrics can merge them (docs/decisions/0060).

NOTE: this module must not import prometheus_client: a launcher calls it and sets
PROMETHEUS_MULTIPROC_DIR before anything imports that library, which picks its storage once,
at import.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

# `kind.N`: honcho's HONCHO_PROCESS_NAME, Heroku's DYNO (N counts from 1).
COPY_NAME = re.compile(r"^[\w-]+\.(?P<copy>[1-9]\d*)$")
# Copy N of `web` and `ws` listens on WEB_PORT / WS_PORT + 100 × (N − 1): 8080, 8180, … and
# 8081, 8181, …, clear of each other, of the local stand-ins (8090, 8091) and of the metrics ports
# (9200 onwards) (docs/decisions/0143).
COPY_PORT_STRIDE = 100


def fresh_dir(process: str, port: int) -> str:
    """An empty directory named by the launcher's port: a port has one listener per host, so two
    live launchers never share one, and a restart starts its figures from zero."""
    path = Path(tempfile.gettempdir()) / f"ftl-metrics-{process}-{port}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def remove_dir(path: str) -> None:
    """The launcher is stopping: its processes' figures go with it."""
    shutil.rmtree(path, ignore_errors=True)


def copy_number(env: Mapping[str, str] = os.environ) -> int:
    """Which copy of its Procfile kind this process is (1 when not started by a Procfile runner,
    or started once): `worker.2` is 2. Its metrics port is METRICS_PORT + copy - 1, so every copy
    of a kind serves its own /metrics at a port known in advance (docs/decisions/0141)."""
    for name in ("HONCHO_PROCESS_NAME", "DYNO"):
        matched = COPY_NAME.match(env.get(name, ""))
        if matched:
            return int(matched["copy"])
    return 1


def copy_port(base: int, env: Mapping[str, str] = os.environ) -> int:
    """The port this copy of `web` or `ws` listens on, from its kind's base port."""
    return base + COPY_PORT_STRIDE * (copy_number(env) - 1)
