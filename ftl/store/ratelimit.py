"""Rate limits in Redis, so they hold across every web process (SPEC §3): fixed one-minute
windows per client IP, overall and per route, checked in one script call."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping

from ftl.core.errors import RateLimited
from ftl.store import keys
from ftl.store.scripts import Scripts

WINDOW_MS = 60_000
IP_LIMIT_PER_MIN = 200
OVERALL_SCOPE = "ip"
# APPSEC: one IPv6 subscriber is handed a whole /64 and can rotate through it freely, so the
# limits count a /64 as one client (docs/decisions/0113).
IPV6_CLIENT_PREFIX = 64


def client_key(address: str) -> str:
    """What the limits count as one client: an IPv4 address, or the /64 of an IPv6 one (an
    IPv4-mapped IPv6 address counts as its IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # NOTE: not an IP (a unix socket peer): counted as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


async def hit(scripts: Scripts, address: str, limits: Mapping[str, int]) -> None:
    """Count one request from `address` against each `scope -> requests per minute`, keyed by
    its `client_key` (so no limit can key an IPv6 client by its full address); 429
    `rate_limited` with the seconds to wait when any is exceeded."""
    client = client_key(address)
    scopes = list(limits)
    allowed, retry_after_ms = await scripts.call(
        "rate_limit",
        keys=[keys.rate_limit(scope, client) for scope in scopes],
        args=[WINDOW_MS, *(limits[scope] for scope in scopes)],
    )
    if not allowed:
        raise RateLimited(max(1, math.ceil(int(retry_after_ms) / 1000)))
