"""Reading JSON request bodies: size cap, media type, then one typed decode (web/schemas.py),
every refusal as an envelope error."""

from __future__ import annotations

import re
from functools import cache
from typing import TypeVar

import falcon
import falcon.asgi
import msgspec

from ftl.core import json_input
from ftl.core.errors import InvalidInput

MAX_BODY_BYTES = 16 * 1024

B = TypeVar("B", bound=msgspec.Struct)

# msgspec says where it refused as `$.a.b[0]`, and which field in the words of two refusals.
PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
NAMED = re.compile(r"^Object (?P<what>contains unknown|missing required) field `(?P<name>[^`]*)`")


class BodyLimit:
    """Middleware: refuse a declared body over 16 KiB before reading any of it."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if req.content_length is not None and req.content_length > MAX_BODY_BYTES:
            raise falcon.HTTPContentTooLarge(
                description=f"The body is over {MAX_BODY_BYTES} bytes."
            )


async def read_body(req: falcon.asgi.Request, schema: type[B]) -> B:
    """The body as `schema`; 415 unless JSON, 413 over 16 KiB, 400 `invalid_json`,
    `unknown_field` or `validation_error` naming the field."""
    if not req.content_type or req.content_type.split(";")[0].strip().lower() != "application/json":
        raise falcon.HTTPUnsupportedMediaType(description="Send the body as application/json.")
    # NOTE: a chunked body has no Content-Length, so the cap is enforced while reading too.
    raw = await req.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise falcon.HTTPContentTooLarge(description=f"The body is over {MAX_BODY_BYTES} bytes.")
    return decode(raw, schema)


async def read_optional_body(req: falcon.asgi.Request, schema: type[B]) -> B:
    """The body when the client sent one (cookie-only clients send none), else the empty one."""
    if not req.content_length and not req.content_type:
        return schema()
    return await read_body(req, schema)


@cache
def _decoder(schema: type[B]) -> msgspec.json.Decoder[B]:
    return msgspec.json.Decoder(schema)


def decode(raw: bytes, schema: type[B]) -> B:
    """`raw` JSON as `schema` under the rules of ftl/core/json_input.py (I-JSON, nesting depth)."""
    # PERF: an ordinary body (a trade) is ASCII, has a few brackets and no `\u` escape: it goes
    # straight to msgspec. Any other is judged first by ftl/core/json_input.py, so non-UTF-8 text,
    # a lone surrogate and deep nesting are refused exactly as at every other edge.
    if (
        not raw.isascii()
        or b"\\u" in raw
        or raw.count(b"[") + raw.count(b"{") > json_input.MAX_DEPTH
    ):
        json_input.loads(raw)
    try:
        decoded: B = _decoder(schema).decode(raw)
        return decoded
    except (msgspec.ValidationError, msgspec.DecodeError) as refused:
        # NOTE: msgspec stops at the first refusal; a body that is not JSON at all (`{"a":
        # Infinity}`) is `invalid_json` before any field is judged, as it always was.
        json_input.loads(raw)
        if isinstance(refused, msgspec.ValidationError):
            raise refusal(refused) from None
        raise InvalidInput("invalid_json", "The body is not valid JSON.") from None


def refusal(refused: msgspec.ValidationError) -> InvalidInput:
    """msgspec's refusal as ours: the field named as a dotted path from the top."""
    text = str(refused)
    at = PATH.search(text)
    where = at.group("path") if at else ""
    words = text[: at.start()] if at else text
    where = re.sub(r"\[(\d+)\]", r".\1", where).lstrip(".")
    named = NAMED.match(words)
    if named:
        field = f"{where}.{named['name']}" if where else named["name"]
        if named["what"] == "contains unknown":
            return InvalidInput("unknown_field", f"Unknown field {field!r}.", {"field": field})
        return InvalidInput("validation_error", f"{field} is required.", {"field": field})
    if not where:
        return InvalidInput("invalid_json", "The body must be a JSON object.")
    return InvalidInput("validation_error", f"{where}: {_lowered(words)}.", {"field": where})


def _lowered(words: str) -> str:
    return words[:1].lower() + words[1:]
