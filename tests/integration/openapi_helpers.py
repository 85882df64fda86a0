"""Checking real responses against the OpenAPI document (web/openapi.py): the schema documented
for the route, method and status, validated with the JSON Schema 2020-12 dialect of OAS 3.1."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import falcon
from falcon import testing
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from web.openapi import document

DOCUMENT_URI = "urn:ftl:openapi"
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_iso_time(value: object) -> bool:
    """RFC 3339 as Python writes it: a date, a time and a zone."""
    if not isinstance(value, str):
        return True
    return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


@cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(
        document(False), default_specification=DRAFT202012
    )
    registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
    return registry


@cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    """Concrete path -> documented template, literal segments winning over parameters."""
    paths = sorted(document(False)["paths"], key=lambda p: p.count("{"))
    return [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p) for p in paths]


def template_of(path: str) -> str | None:
    for pattern, template in _templates():
        if pattern.match(path):
            return template
    return None


@dataclass
class Exercised:
    """Which documented (METHOD, template) pairs and statuses a test run has checked."""

    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def operations(self) -> set[tuple[str, str]]:
        return {(method, template) for method, template, _ in self.seen}


def assert_documented(result: testing.Result, method: str, path: str) -> tuple[str, int]:
    """The response is one the document promises: a documented status, JSON of the documented
    schema, and Retry-After on a 429. Returns (template, status)."""
    template = template_of(path.split("?", 1)[0])
    assert template is not None, f"{path} is not in the OpenAPI document"
    operation = document(False)["paths"][template].get(method.lower())
    assert operation is not None, f"{method} {template} is not in the OpenAPI document"
    status = result.status_code
    response = operation["responses"].get(str(status))
    where = f"{method} {template} {status}"
    assert response is not None, (
        f"{method} {template} answered undocumented {status}: {result.text}"
    )
    content = response.get("content")
    if content is None:
        assert not result.content, f"{where} should have no body"
    elif not result.headers.get("content-type", "").startswith(falcon.MEDIA_JSON):
        media_type = result.headers.get("content-type", "").split(";")[0]
        assert media_type in content, f"{where} answered undocumented {media_type}"
    else:
        assert falcon.MEDIA_JSON in content, f"{where} answered undocumented JSON"
        pointer = _pointer(
            "paths",
            template,
            method.lower(),
            "responses",
            str(status),
            "content",
            falcon.MEDIA_JSON,
        )
        wrapper = {"$ref": f"{DOCUMENT_URI}#/{pointer}/schema"}
        validator = Draft202012Validator(wrapper, registry=_registry(), format_checker=FORMATS)
        problems = [
            f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(result.json)
        ]
        assert not problems, f"{where} disagrees with its schema: {problems}"
    for header in response.get("headers", {}):
        assert result.headers.get(header), f"{where} lacks {header}"
    return template, status


async def checked(
    api: testing.ASGIConductor,
    method: str,
    path: str,
    exercised: Exercised | None = None,
    **kwargs: Any,
) -> testing.Result:
    """Call the API and assert the answer is documented; record it in `exercised`."""
    result = await api.simulate_request(method, path, **kwargs)
    assert isinstance(result, testing.Result)
    template, status = assert_documented(result, method, path)
    if exercised is not None:
        exercised.seen.add((method.upper(), template, status))
    return result
