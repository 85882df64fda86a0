"""The Redis Lua scripts of lua/: loaded once, run by EVALSHA, reloaded on NOSCRIPT.

A Redis restart or `SCRIPT FLUSH` forgets every script; the first call after it gets NOSCRIPT,
loads the script again and retries once, so callers never see the difference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

LUA_DIR = Path(__file__).resolve().parents[1] / "lua"
# NOTE: a script line `--! include NAME` is replaced by lua/lib/NAME, so the trading scripts share
# one copy of the engine (Redis scripts cannot import each other).
INCLUDE_DIRECTIVE = "--! include "

KeyOrArg = str | int | float | bytes


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


def _expand_includes(source: str, library: Path) -> str:
    lines = []
    for line in source.splitlines(keepends=True):
        if line.startswith(INCLUDE_DIRECTIVE):
            line = (library / line[len(INCLUDE_DIRECTIVE) :].strip()).read_text(encoding="utf-8")
        lines.append(line)
    return "".join(lines)


class Scripts:
    """The loaded scripts of one Redis connection pool."""

    def __init__(self, redis: Redis, scripts: dict[str, Script] | None = None) -> None:
        self.redis = redis
        self.scripts = read_scripts() if scripts is None else scripts

    async def load(self) -> None:
        for script in self.scripts.values():
            await self.redis.script_load(script.source)

    async def missing(self) -> list[str]:
        """Names of the scripts Redis does not hold right now."""
        names = list(self.scripts)
        present = await self.redis.script_exists(*(self.scripts[n].sha for n in names))
        return [name for name, ok in zip(names, present, strict=True) if not ok]

    async def call(
        self, name: str, keys: Sequence[KeyOrArg] = (), args: Sequence[KeyOrArg] = ()
    ) -> Any:
        script = self.scripts[name]
        try:
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(script.source)
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
