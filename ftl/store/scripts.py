"""The Redis Lua scripts of lua/: loaded once, run by EVALSHA, reloaded on NOSCRIPT.

A Redis restart or `SCRIPT FLUSH` forgets every script; the first call after it gets NOSCRIPT,
loads the script again and retries once, so callers never see the difference. The trade scripts
run as Redis Functions instead (FUNCTION_SCRIPTS), reloaded the same way when Redis lost them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from ftl.core import metrics
from ftl.core.errors import NotReplicated
from ftl.store.hotstore import KeyOrArg, PipelinedConnection

LUA_DIR = Path(__file__).resolve().parents[2] / "lua"
# NOTE: a script line `--! include NAME` is replaced by lua/lib/NAME, so the trading scripts share
# one copy of the engine (Redis scripts cannot import each other).
INCLUDE_DIRECTIVE = "--! include "


# PERF: these scripts also run as the functions of one Redis Functions library, whose top level
# (the engine's ~45 function definitions) runs once per FUNCTION LOAD instead of once per call:
# 8–14 % of a trade's Lua time (decision 0019). Every call still sees a fresh engine cache.
FUNCTION_SCRIPTS = ("position_open", "position_close")
FUNCTION_LIBRARY_ENGINE = "engine.lua"
FUNCTION_NOT_FOUND = "Function not found"


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


def read_scripts(directory: Path = LUA_DIR) -> dict[str, Script]:
    """Every lua/*.lua by its stem, with the SHA1 Redis will know it by."""
    scripts = {}
    for path in sorted(directory.glob("*.lua")):
        source = _expand_includes(path.read_text(encoding="utf-8"), directory / "lib")
        # NOTE: SHA1 is how Redis names scripts (EVALSHA), not a security measure.
        sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()
        scripts[path.stem] = Script(path.stem, source, sha)
    return scripts


@dataclass(frozen=True)
class Library:
    """A Redis Functions library: `functions` maps a script's name to its function's name. Both
    names carry the library's version, so processes of two releases never run each other's code."""

    name: str
    source: str
    functions: dict[str, str]


def read_library(directory: Path = LUA_DIR, names: Sequence[str] = FUNCTION_SCRIPTS) -> Library:
    """The library of the engine (once) and each named script's body as a function."""
    include = f"{INCLUDE_DIRECTIVE}{FUNCTION_LIBRARY_ENGINE}\n"
    bodies = {}
    for name in names:
        source = (directory / f"{name}.lua").read_text(encoding="utf-8")
        if include not in source:
            raise ValueError(f"lua/{name}.lua does not include {FUNCTION_LIBRARY_ENGINE}")
        bodies[name] = source.replace(include, "", 1)
    engine = (directory / "lib" / FUNCTION_LIBRARY_ENGINE).read_text(encoding="utf-8")
    digest = hashlib.sha1(
        (engine + "".join(bodies.values())).encode("utf-8"), usedforsecurity=False
    ).hexdigest()[:12]
    functions = {name: f"{name}_{digest}" for name in names}
    # NOTE: KEYS and ARGV are the function's parameters, so a script's body reads as it does
    # under EVALSHA; E.reset() empties the engine's per-call caches first.
    wrapped = "".join(
        f"redis.register_function('{functions[name]}', function(KEYS, ARGV)\nE.reset()\n"
        f"{body}\nend)\n"
        for name, body in bodies.items()
    )
    library = f"ftl_{digest}"
    return Library(library, f"#!lua name={library}\n{engine}\n{wrapped}", functions)


def _expand_includes(source: str, library: Path) -> str:
    lines = []
    for line in source.splitlines(keepends=True):
        if line.startswith(INCLUDE_DIRECTIVE):
            line = (library / line[len(INCLUDE_DIRECTIVE) :].strip()).read_text(encoding="utf-8")
        lines.append(line)
    return "".join(lines)


class Scripts:
    """The loaded scripts of one Redis connection pool; the functions (the trade calls) go through
    `pipeline` when given (decision 0023). With `wait_replicas`, a function's call returns only
    once that many replicas hold its writes, else raises NotReplicated (decision 0151)."""

    def __init__(
        self,
        redis: Redis,
        scripts: dict[str, Script] | None = None,
        pipeline: PipelinedConnection | None = None,
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 0,
    ) -> None:
        self.redis = redis
        self.scripts = read_scripts() if scripts is None else scripts
        self.library = read_library()
        self.pipeline = pipeline
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    async def load(self) -> None:
        for script in self.scripts.values():
            await self.redis.script_load(script.source)
        await self._load_library()

    async def _load_library(self) -> None:
        await self.redis.function_load(self.library.source, replace=True)

    async def missing(self) -> list[str]:
        """Names of the scripts Redis does not hold right now (as scripts or as functions)."""
        names = list(self.scripts)
        present = await self.redis.script_exists(*(self.scripts[n].sha for n in names))
        missing = [name for name, ok in zip(names, present, strict=True) if not ok]
        if not await self.redis.function_list(library=self.library.name):
            missing += [name for name in self.library.functions if name not in missing]
        return missing

    async def call(
        self, name: str, keys: Sequence[KeyOrArg] = (), args: Sequence[KeyOrArg] = ()
    ) -> Any:
        script = self.scripts[name]
        function = self.library.functions.get(name)
        started = perf_counter()
        try:
            if function is not None:
                return await self._fcall(function, keys, args)
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(script.source)
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
        finally:
            metrics.lua_call(name).observe(perf_counter() - started)

    async def _fcall(
        self, function: str, keys: Sequence[KeyOrArg], args: Sequence[KeyOrArg]
    ) -> Any:
        try:
            return await self._fcall_once(function, keys, args)
        except ResponseError as exc:
            if not str(exc).startswith(FUNCTION_NOT_FOUND):
                raise
            await self._load_library()
            return await self._fcall_once(function, keys, args)

    async def _fcall_once(
        self, function: str, keys: Sequence[KeyOrArg], args: Sequence[KeyOrArg]
    ) -> Any:
        replicas, timeout_ms = self.wait_replicas, self.wait_timeout_ms
        command = ("FCALL", function, len(keys), *keys, *args)
        if self.pipeline is not None:
            if not replicas:
                return await self.pipeline.execute(*command)
            reply, confirmed = await self.pipeline.execute_replicated(
                replicas, timeout_ms, *command
            )
            self._confirm(confirmed)
            return reply
        if not replicas:
            return await self.redis.fcall(function, len(keys), *keys, *args)
        # NOTE: WAIT counts the writes of its own connection: one pipeline keeps both on one.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.fcall(function, len(keys), *keys, *args)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            reply, confirmed = await pipe.execute(raise_on_error=False)
        if isinstance(reply, Exception):
            raise reply
        self._confirm(confirmed)
        return reply

    def _confirm(self, confirmed: int) -> None:
        if confirmed < self.wait_replicas:
            raise NotReplicated()
