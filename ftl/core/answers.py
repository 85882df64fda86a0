"""The base of every HTTP answer and the field types they share (decision 0135).

An answer is a msgspec Struct declared in the module that builds it (ftl/ for what the domain
builds, web/schemas.py for what only the web edge builds). The resource hands the instance to
Falcon, msgspec encodes it, and the OpenAPI document's schema is generated from the same class:
one declaration for both. Declared here, at the bottom room, because every room builds answers.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

DISTRICT_COUNT = 14

Points = Annotated[float, Meta(description="Points, exact to the cent.")]
Time = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Id = Annotated[str, Meta(extra_json_schema={"format": "uuid"})]
Idx = Annotated[int, Meta(ge=1, le=65535)]
DistrictId = Annotated[int, Meta(ge=1, le=DISTRICT_COUNT)]


class Answer(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """A response object: closed, its keys the camelCase of its fields, in declaration order.

    NOTE: a Struct does not check its values when built; the builder passes the JSON values
    (points as `json_number` floats, instants as `iso` text) and msgspec writes them as given."""
