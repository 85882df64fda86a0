"""Every actor's arguments are checked when its message is sent, in the sender.

A message that cannot succeed (`replay_user.send("garbage")`, a `since` that is not a time, a
wrong number of arguments) used to be accepted, fail in the worker, be retried with backoff and
land in the dead-letter queue with six tracebacks. Now `.send()` raises `InvalidMessage` (a
ValueError) in the caller and nothing is enqueued (docs/decisions/0114).

Rules go by parameter name, one table for every actor; tests/integration/test_broker.py holds
that every parameter of every actor has one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

import dramatiq
from dramatiq.middleware import Middleware, MiddlewareError


class InvalidMessage(MiddlewareError, ValueError):
    """A message whose arguments its actor cannot take; raised by `.send()` in the sender.

    NOTE: a MiddlewareError, because Dramatiq logs and swallows any other exception raised
    before a message is enqueued."""


def _uuid(value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(value)
    UUID(value)


def _uuids(value: object) -> None:
    if not isinstance(value, list | tuple):
        raise TypeError(value)
    for each in value:
        _uuid(each)


def _time_or_none(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is None:
        raise ValueError(value)


def _positive_whole_number(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(value)


# Parameter name -> (its check, what it must be).
RULES: dict[str, tuple[Callable[[object], None], str]] = {
    "user_id": (_uuid, "a UUID as text"),
    "outbox_id": (_uuid, "a UUID as text"),
    "fixture_id": (_uuid, "a UUID as text"),
    "user_ids": (_uuids, "a list of UUIDs as text"),
    "instrument_ids": (_uuids, "a list of UUIDs as text"),
    "since": (_time_or_none, "None or an ISO-8601 time with a zone"),
    "chunk_users": (_positive_whole_number, "a whole number of at least 1"),
}


@cache
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)  # NOTE: follows Dramatiq's async wrapper to the actor itself


def check(actor_name: str, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
    """Raise InvalidMessage unless `fn` takes `args` and `kwargs` and each passes its rule."""
    try:
        bound = _signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise InvalidMessage(f"{actor_name}: {exc}") from None
    for name, value in bound.arguments.items():
        if name not in RULES:
            continue  # NOTE: only tests declare such actors; test_broker.py holds ours to RULES
        rule, meaning = RULES[name]
        try:
            rule(value)
        except (TypeError, ValueError):
            shown = repr(value)[:80]
            raise InvalidMessage(f"{actor_name}: {name} must be {meaning}, got {shown}") from None


class ValidateArguments(Middleware):
    """Checks a message against its actor before it is enqueued (and before each retry)."""

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int
    ) -> None:
        actor = broker.actors.get(message.actor_name)
        if actor is not None:
            check(message.actor_name, actor.fn, message.args, message.kwargs)
