"""Request ids, request latency by route, and GET /metrics of the web process (SPEC §3.3).

PERF: the middleware costs a few microseconds per request: one header read, one contextvar set,
two clock reads and one histogram observation through a cached label child. The access line is
logged only at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from time import perf_counter
from typing import Any

import falcon
import falcon.asgi
from prometheus_client import Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ftl.core import logs, metrics
from ftl.core.errors import Unauthorized

log = logging.getLogger("web.access")

REQUEST_ID_HEADER = "X-Request-Id"
UNMATCHED_ROUTE = "unmatched"  # no route: a 404 or a refusal before routing
# NOTE: the method is a label, so one a client invents must not mint a new series.
KNOWN_METHODS = frozenset(falcon.COMBINED_METHODS)
REQUEST_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

REQUEST_SECONDS = Histogram(
    "ftl_http_request_duration_seconds",
    "Time from the request reaching the app to its response, by method, route template and status.",
    ["method", "route", "status"],
    buckets=REQUEST_BUCKETS_S,
)


@lru_cache(maxsize=4096)
def request_seconds(method: str, route: str, status: int) -> Histogram:
    return REQUEST_SECONDS.labels(method, route, str(status))


class Telemetry:
    """First middleware: takes the client's `X-Request-Id` when it is a short token or makes one,
    answers it in the same header, keeps it in `ftl.core.logs.request_id` for every log line and
    enqueued message of the request, and times the request by its route template (never the
    raw path, which holds ids)."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        request_id = logs.valid_request_id(req.get_header(REQUEST_ID_HEADER))
        request_id = request_id or logs.new_request_id()
        req.context.started = perf_counter()
        req.context.request_id_token = logs.request_id.set(request_id)
        resp.set_header(REQUEST_ID_HEADER, request_id)

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        elapsed = perf_counter() - req.context.started
        method = req.method if req.method in KNOWN_METHODS else "other"
        route = req.uri_template or UNMATCHED_ROUTE
        status = resp.status_code
        request_seconds(method, route, status).observe(elapsed)
        if log.isEnabledFor(logging.DEBUG):
            # APPSEC: the path only; a query string may carry what the log must not.
            log.debug("%s %s %d %.2f ms", req.method, req.path, status, elapsed * 1000)
        logs.request_id.reset(req.context.request_id_token)


class Metrics:
    """GET /metrics: Prometheus text of every worker process of this `web` (multiprocess)."""

    def __init__(self, multiproc_dir: str, metrics_token: str) -> None:
        self.multiproc_dir = multiproc_dir
        self.metrics_token = metrics_token

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if not metrics.scrape_allowed(req.get_header("Authorization"), self.metrics_token):
            raise Unauthorized("unauthorized", "/metrics needs the METRICS_TOKEN bearer token.")
        # NOTE: merging the processes' files reads disk; a thread keeps the event loop free.
        registry = metrics.registry_of(self.multiproc_dir)
        resp.data = await asyncio.to_thread(generate_latest, registry)
        resp.content_type = CONTENT_TYPE_LATEST


def add_routes(app: falcon.asgi.App[Any, Any], multiproc_dir: str, metrics_token: str) -> None:
    app.add_route("/metrics", Metrics(multiproc_dir, metrics_token))
