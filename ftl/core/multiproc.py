"""The directory where the processes of one launcher (`ftl web`, `python -m workers`) keep their
Prometheus figures, so that one /metrics can merge them (docs/decisions/0060).

NOTE: this module must not import prometheus_client: a launcher calls it and sets
PROMETHEUS_MULTIPROC_DIR before anything imports that library, which picks its storage once,
at import.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


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
