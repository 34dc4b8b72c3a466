"""The built package for the fleet tests: the .deb of `make deb` and the signed repository of `make repo`."""

from __future__ import annotations

from pathlib import Path

import pytest

DIST = Path(__file__).resolve().parents[2] / "dist"


def built_package(arch: str = "amd64") -> tuple[Path, Path]:
    """(newest dist/llm-tpu-appliance_*_<arch>.deb, dist/repo); fails the test when `make repo` has not run."""
    debs = sorted(DIST.glob(f"llm-tpu-appliance_*_{arch}.deb"), key=lambda p: p.stat().st_mtime)
    repo = DIST / "repo"
    if not debs or not (repo / "dists/stable/InRelease").exists():
        pytest.fail(
            "no package or repository in dist/: run `make package-test` (it runs make deb and make repo)"
        )
    return debs[-1], repo
