"""Reading JSON request bodies: size cap, media type, parse errors, all as envelope errors."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from ftl.core import json_input
from ftl.core.errors import InvalidInput

MAX_BODY_BYTES = 16 * 1024


class BodyLimit:
    """Middleware: refuse a declared body over 16 KiB before reading any of it."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
            raise falcon.HTTPContentTooLarge(
                description=f"The body is over {MAX_BODY_BYTES} bytes."
            )


async def read_json(req: falcon.asgi.Request) -> dict[str, Any]:
    """The body as a JSON object; 415 unless JSON, 413 over 16 KiB, 400 `invalid_json`
    (ftl/core/json_input.py: not I-JSON, or nested too deep)."""
    if not req.content_type or req.content_type.split(";")[0].strip().lower() != "application/json":
        raise falcon.HTTPUnsupportedMediaType(description="Send the body as application/json.")
    # NOTE: a chunked body has no Content-Length, so the cap is enforced while reading too.
    raw = await req.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise falcon.HTTPContentTooLarge(description=f"The body is over {MAX_BODY_BYTES} bytes.")
    body = json_input.loads(raw)
    if not isinstance(body, dict):
        raise InvalidInput("invalid_json", "The body must be a JSON object.")
    return body


def refuse_unknown_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """400 `unknown_field` naming the first field the route does not take: typos fail loudly."""
    for name in body:
        if name not in allowed:
            raise InvalidInput("unknown_field", f"Unknown field {name!r}.", {"field": name})
