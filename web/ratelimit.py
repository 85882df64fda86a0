"""Middleware: the rate limits of SPEC §3.1, per client IP, shared by every web process.

NOTE: the client IP is what uvicorn reports: behind a proxy listed in FORWARDED_ALLOW_IPS it is
taken from X-Forwarded-For; otherwise the peer address, which a client cannot forge.
"""

from __future__ import annotations

import falcon.asgi

from ftl.store import ratelimit
from ftl.store.services import Services

# Requests per minute per client IP, by (method, route template), on top of the overall limit.
ROUTE_LIMITS_PER_MIN = {
    ("POST", "/api/auth/google"): 20,
    ("POST", "/api/auth/verify-otp"): 10,
    ("POST", "/api/auth/resend-otp"): 5,
    ("POST", "/api/auth/google/complete"): 10,
    ("POST", "/api/auth/refresh"): 200,
    ("POST", "/api/auth/logout"): 200,
    ("POST", "/api/ws/token"): 60,
    ("GET", "/api/public/referral/validate"): 10,
}
# NOTE: probes from load balancers and Prometheus must never be refused.
UNLIMITED_PATHS = frozenset({"/health", "/ready", "/metrics"})


class RateLimit:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        params: dict[str, object],
    ) -> None:
        if (
            not self.services.settings.rate_limit_enabled
            or req.method == "OPTIONS"  # NOTE: a CORS preflight is part of the request it precedes
            or req.path in UNLIMITED_PATHS
        ):
            return
        limits = {ratelimit.OVERALL_SCOPE: ratelimit.IP_LIMIT_PER_MIN}
        route_limit = ROUTE_LIMITS_PER_MIN.get((req.method, req.uri_template or ""))
        if route_limit is not None:
            limits[f"{req.method}:{req.uri_template}"] = route_limit
        await ratelimit.hit(self.services.scripts, req.remote_addr, limits)
