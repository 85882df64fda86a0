"""Every script in lua/ opens with a comment documenting its KEYS, ARGV and return value."""

from __future__ import annotations

import pytest

from ftl.store.scripts import LUA_DIR, read_scripts

SCRIPTS = sorted(read_scripts())


def test_the_ping_script_exists() -> None:
    assert "ping" in SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_documents_keys_argv_and_return(name: str) -> None:
    header = []
    for line in (LUA_DIR / f"{name}.lua").read_text().splitlines():
        if not line.startswith("--"):
            break
        header.append(line)
    text = "\n".join(header)
    assert text.startswith(f"-- {name}.lua:")
    for section in ("KEYS:", "ARGV:", "Returns:", "Errors:"):
        assert section in text, f"{name}.lua header lacks {section}"
