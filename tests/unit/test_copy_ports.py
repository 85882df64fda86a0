"""The port each copy of a Procfile kind listens on (docs/decisions/0141, 0143)."""

from __future__ import annotations

from ftl.core.multiproc import copy_number, copy_port


def test_copies_are_numbered_by_the_procfile_runner() -> None:
    assert copy_number({}) == 1
    assert copy_number({"HONCHO_PROCESS_NAME": "web.1"}) == 1
    assert copy_number({"HONCHO_PROCESS_NAME": "web.3"}) == 3
    assert copy_number({"DYNO": "ws.2"}) == 2
    assert copy_number({"HONCHO_PROCESS_NAME": "web"}) == 1  # not started as a copy


def test_web_and_ws_copies_never_share_a_port() -> None:
    webs = [copy_port(8080, {"HONCHO_PROCESS_NAME": f"web.{n}"}) for n in range(1, 6)]
    sockets = [copy_port(8081, {"HONCHO_PROCESS_NAME": f"ws.{n}"}) for n in range(1, 6)]
    assert webs == [8080, 8180, 8280, 8380, 8480]
    assert not set(webs) & set(sockets)
