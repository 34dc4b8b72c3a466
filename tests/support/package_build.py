"""The built package for the fleet tests: the .deb of `make deb` and the signed repository that `make package-test` makes in dist/repo."""

from __future__ import annotations

from pathlib import Path

import pytest

DIST = Path(__file__).resolve().parents[2] / "dist"


def built_package(arch: str = "amd64") -> tuple[Path, Path]:
    """(newest dist/llm-tpu-appliance_*_<arch>.deb, dist/repo); fails the test when none was built."""
    debs = sorted(DIST.glob(f"llm-tpu-appliance_*_{arch}.deb"), key=lambda p: p.stat().st_mtime)
    repo = DIST / "repo"
    if not debs or not (repo / "dists/stable/InRelease").exists():
        pytest.fail(
            "no package or repository in dist/: run `make package-test` (it builds the amd64 package and its signed repository)"
        )
    return debs[-1], repo
