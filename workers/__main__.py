"""`python -m workers MODULE...`: the `dramatiq` command with FTL's broker, JSON logs and /metrics.

The copy of its Procfile kind this launcher is (`worker.2` under honcho) moves METRICS_PORT on by
the copy's number less one, so every copy serves /metrics on its own port (docs/decisions/0141).
Before Dramatiq starts its processes this empties the metrics directory of that port and points
PROMETHEUS_MULTIPROC_DIR (and Dramatiq's `dramatiq_prom_db`) at it, so that every worker process
writes its figures there and the exposition process merges them; logging is set up here once,
and the worker processes Dramatiq forks inherit it (docs/decisions/0060, 0061). Dramatiq's broker
argument is `workers.runtime:start`, which each worker process calls before it imports the actor
modules (docs/decisions/0140).
"""

from __future__ import annotations

import os
import sys

from ftl.core import logs, multiproc
from ftl.core.config import get_settings

BROKER = "workers.runtime:start"  # Dramatiq's CLI calls it, then imports the actor modules


def main(argv: list[str]) -> int:
    # NOTE: importing the `workers` package already checked the settings (and stopped the
    # process on a ConfigError), so they are good here.
    port = get_settings().metrics_port + multiproc.copy_number() - 1
    os.environ["METRICS_PORT"] = str(port)
    directory = multiproc.fresh_dir("dramatiq", port)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.environ["dramatiq_prom_db"] = directory  # noqa: SIM112 - Dramatiq's own spelling
    # NOTE: the forked processes must read the settings again, with the directory in them.
    get_settings.cache_clear()
    logs.setup(get_settings().log_level)
    from dramatiq.cli import main as dramatiq_main

    sys.argv = ["dramatiq", BROKER, *argv]
    try:
        code: int = dramatiq_main()  # type: ignore[no-untyped-call]
    finally:
        multiproc.remove_dir(directory)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
