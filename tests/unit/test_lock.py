"""The lock files agree with setup.cfg, and `scripts/check_lock.py` (run by scripts/venv.sh before
any install) refuses a checkout where they do not, naming the disagreement."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "check_lock.py"
LOCKS = ("requirements/dev.lock", "requirements/runtime.lock")


def check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), str(root)], capture_output=True, text=True, timeout=30
    )


def checkout_copy(tmp_path: Path) -> Path:
    (tmp_path / "requirements").mkdir()
    for name in ("setup.cfg", "requirements/build.in", *LOCKS):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_committed_locks_agree_with_setup_cfg() -> None:
    result = check(ROOT)
    assert result.returncode == 0, result.stderr


def test_a_range_the_lock_does_not_meet_stops_the_install(tmp_path: Path) -> None:
    root = checkout_copy(tmp_path)
    setup = root / "setup.cfg"
    setup.write_text(setup.read_text().replace("falcon>=4.0,<5", "falcon>=5,<6"))
    result = check(root)
    assert result.returncode == 1
    assert "falcon==" in result.stderr and "outside setup.cfg's falcon<6,>=5" in result.stderr
    assert "run `make lock`" in result.stderr


def test_a_new_dependency_missing_from_the_lock_stops_the_install(tmp_path: Path) -> None:
    root = checkout_copy(tmp_path)
    setup = root / "setup.cfg"
    setup.write_text(
        setup.read_text().replace(
            "    msgpack>=1.0,<2\n", "    msgpack>=1.0,<2\n    attrs-extra>=1\n"
        )
    )
    result = check(root)
    assert result.returncode == 1
    assert "requirements/dev.lock: attrs-extra>=1 is not in the lock" in result.stderr


def test_a_pin_without_hashes_stops_the_install(tmp_path: Path) -> None:
    root = checkout_copy(tmp_path)
    lock = root / "requirements" / "dev.lock"
    text = lock.read_text()
    start = text.index("falcon==")
    end = text.index("\n", text.index("# via", start))
    lock.write_text(text[:start] + "falcon==4.4.0\n    # via ftl" + text[end:])
    result = check(root)
    assert result.returncode == 1
    assert "requirements/dev.lock: falcon has no hash" in result.stderr


def test_pips_own_packaging_reads_requirements_as_packaging_does() -> None:
    """check_lock.py runs in a bare venv on the copy of `packaging` pip carries (an internal of
    pip's, decision 0142): a pip whose copy moved or changed fails here, in its upgrade's run."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from pip._vendor.packaging.requirements import Requirement as PipsRequirement
    from pip._vendor.packaging.utils import canonicalize_name as pips_canonicalize_name

    for text in ("falcon>=4.0,<5", "redis[hiredis]>=5,<9", "SQLAlchemy[asyncio]>=2.0,<2.2"):
        ours, pips = Requirement(text), PipsRequirement(text)
        assert (pips.name, str(pips.specifier), pips.extras) == (
            ours.name,
            str(ours.specifier),
            ours.extras,
        )
    assert str(pips_canonicalize_name("SQLAlchemy")) == str(canonicalize_name("SQLAlchemy"))
