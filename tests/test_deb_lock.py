"""The Debian package's venv installs exactly debian/runtime/requirements.lock with --no-deps: every
runtime dependency in pyproject.toml must be pinned there, or the package build fails late (pip check)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_every_runtime_dependency_is_pinned_in_the_package_lock() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    lines = (REPO / "debian/runtime/requirements.lock").read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    assert all("==" in pin for pin in pins), "the lock pins exact versions"
    pinned = {_name(pin.split("==")[0]) for pin in pins}
    assert wanted - pinned == set(), "run scripts/lock-deb-requirements.sh"
