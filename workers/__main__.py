"""`python -m workers ARGS`: the `dramatiq ARGS` command with FTL's JSON logs and /metrics.

Before Dramatiq starts its processes this empties the metrics directory of METRICS_PORT and
points PROMETHEUS_MULTIPROC_DIR (and Dramatiq's `dramatiq_prom_db`) at it, so that every worker
process writes its figures there and the exposition process merges them; logging is set up here
once, and the worker processes Dramatiq forks inherit it (docs/decisions/0060, 0061).
"""

from __future__ import annotations

import os
import sys

from ftl.core import logs, multiproc
from ftl.core.config import get_settings


def main(argv: list[str]) -> int:
    # NOTE: importing the `workers` package already checked the settings (and stopped the
    # process on a ConfigError), so they are good here.
    settings = get_settings()
    directory = multiproc.fresh_dir("dramatiq", settings.metrics_port)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.environ["dramatiq_prom_db"] = directory  # noqa: SIM112 - Dramatiq's own spelling
    # NOTE: the forked processes must read the settings again, with the directory in them.
    get_settings.cache_clear()
    logs.setup(settings.log_level)
    from dramatiq.cli import main as dramatiq_main

    sys.argv = ["dramatiq", *argv]
    try:
        code: int = dramatiq_main()  # type: ignore[no-untyped-call]
    finally:
        multiproc.remove_dir(directory)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
