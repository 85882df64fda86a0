"""`honcho` for `make run`, with a clean stop. (Named so as not to shadow the honcho package.)

honcho stops each Procfile process by sending SIGTERM to its whole process group. A Dramatiq
process (worker, flusher, poller) then gets it twice in each of its children: once from honcho,
once forwarded by its main process. Dramatiq takes a second SIGTERM as "kill now" and exits the
child's main thread without stopping its worker threads, so the child hangs until honcho's
SIGKILL. Here SIGTERM goes only to the process honcho started and to its direct children (the
shell and the command it runs); each of them stops its own children (Dramatiq's main, gunicorn's
master). The SIGKILL fallback still reaches the whole group, after 15 s instead of 5 s: a
Dramatiq process needs 3–6 s to stop, its threads and log watcher polling once a second.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import honcho.compat
import honcho.manager
from honcho.command import main

STOP_GRACE_S = 15


def children(pid: int) -> list[int]:
    """The direct children of `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


class ProcessManager(honcho.compat.ProcessManager):  # type: ignore[misc]
    def terminate(self, pid: int) -> None:
        for target in (pid, *children(pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGTERM)


if __name__ == "__main__":
    honcho.manager.KILL_WAIT = STOP_GRACE_S
    honcho.manager.ProcessManager = ProcessManager
    sys.exit(main())
