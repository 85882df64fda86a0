"""Check that the lock files agree with setup.cfg before anything is installed from them.

Every requirement of setup.cfg (install_requires, the dev extra) and of requirements/build.in
must be pinned in the lock with a version inside its range and with hashes, and the runtime lock
must hold the same versions as the dev lock. Exit 1 names each problem.

Usage: python3 scripts/check_lock.py [CHECKOUT] (default: this one). Runs on any Python 3 with
pip (it borrows pip's copy of `packaging`), so it runs before the venv has anything installed.
"""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # NOTE: a bare venv has no packaging, but its pip carries one
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def read_lock(path: Path) -> tuple[dict[str, str], list[str]]:
    """Map each pinned name to its version; also list the pins that carry no hash."""
    pins: dict[str, str] = {}
    hashed: set[str] = set()
    current = ""
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = match.group(2)
        if current and "--hash=sha256:" in line:
            hashed.add(current)
    return pins, sorted(set(pins) - hashed)


def requirements(text: str) -> list[Requirement]:
    return [
        Requirement(line) for line in (s.split("#")[0].strip() for s in text.splitlines()) if line
    ]


def main(root: Path) -> int:
    """Check the checkout at `root`; 0 when setup.cfg and the locks agree, 1 otherwise."""
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    runtime = requirements(setup["options"]["install_requires"])
    dev = requirements(setup["options.extras_require"]["dev"])
    build = requirements((root / "requirements/build.in").read_text())
    problems: list[str] = []
    locks = {
        "requirements/dev.lock": runtime + dev + build,
        "requirements/runtime.lock": runtime + build,
    }
    pinned: dict[str, dict[str, str]] = {}
    for name, wanted in locks.items():
        path = root / name
        if not path.exists():
            problems.append(f"{name} is missing")
            continue
        pins, unhashed = read_lock(path)
        pinned[name] = pins
        problems += [f"{name}: {pkg} has no hash" for pkg in unhashed]
        for requirement in wanted:
            version = pins.get(canonicalize_name(requirement.name))
            if version is None:
                problems.append(f"{name}: {requirement} is not in the lock")
            elif not requirement.specifier.contains(version, prereleases=True):
                problems.append(
                    f"{name}: {requirement.name}=={version} is outside setup.cfg's {requirement}"
                )
    if len(pinned) == 2:
        dev_pins = pinned["requirements/dev.lock"]
        for pkg, version in pinned["requirements/runtime.lock"].items():
            if dev_pins.get(pkg) != version:
                problems.append(f"runtime.lock pins {pkg}=={version}, dev.lock {dev_pins.get(pkg)}")
    for problem in problems:
        print(f"lock: {problem}", file=sys.stderr)
    if problems:
        print(
            "lock: setup.cfg and the lock files disagree; run `make lock` and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    )
