"""gunicorn settings for the `web` process: uvicorn workers serving the falcon.asgi app."""

from typing import Any

from ftl.core import logs, metrics, multiproc
from ftl.core.config import get_settings

_settings = get_settings()

bind = f"{_settings.web_host}:{_settings.web_port}"
workers = _settings.web_concurrency
# APPSEC: uvicorn's worker with a deadline for reading each request and a cap on its head
# (web/worker.py, decision 0077): gunicorn's own limit_request_* settings do not reach uvicorn.
worker_class = "web.worker.WebWorker"
timeout = 30  # s without a heartbeat from a worker (its event loop stuck) before it is killed
graceful_timeout = 10  # s for in-flight requests at a restart
keepalive = 5  # s an idle keep-alive connection stays open (uvicorn's timeout_keep_alive)
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
logconfig_dict = logs.dict_config(_settings.log_level)
# PERF: no access line per request: uvicorn logs one whenever `gunicorn.access` has a handler
# (its workers copy them); web.telemetry logs each request at DEBUG instead.
logconfig_dict["loggers"]["gunicorn.access"] = {"handlers": [], "propagate": False}
proc_name = "ftl-web"
# NOTE: gunicorn ≥ 25.1 opens a control socket at one fixed path per user; several `web`
# processes on one host (scaled replicas, the e2e tests) would fight over it.
control_socket_disable = True


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: drop its live gauges from the merged /metrics (multiprocess mode)."""
    if _settings.prometheus_multiproc_dir:
        metrics.mark_process_dead(_settings.prometheus_multiproc_dir, worker.pid)


def on_exit(server: Any) -> None:
    if _settings.prometheus_multiproc_dir:
        multiproc.remove_dir(_settings.prometheus_multiproc_dir)
