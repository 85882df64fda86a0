"""Middleware: query parameters are text no route can use when they carry control characters.

APPSEC: a NUL reaches Postgres as a query parameter and fails there (a 500), and no parameter of
ours (ids, cursors, codes, filters, numbers) ever needs a control character; refusing them at
the edge answers 400 for every route at once.
"""

from __future__ import annotations

import unicodedata

import falcon.asgi

from ftl.core.errors import InvalidInput


def _usable(value: str) -> bool:
    # PERF: printable text (the usual case) has no control character; only the rest is walked.
    return value.isprintable() or not any(
        unicodedata.category(char) in ("Cc", "Cs") for char in value
    )


class QueryText:
    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if not req.query_string:
            return
        for name, value in req.params.items():
            values = value if isinstance(value, list) else [value]
            if not (_usable(name) and all(_usable(v) for v in values)):
                raise InvalidInput(
                    "validation_error",
                    f"The query parameter {name!r} holds a control character.",
                    {"field": name},
                )
