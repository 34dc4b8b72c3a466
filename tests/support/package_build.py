"""The package the fleet tests install: the real .deb from `make deb` (scripts/build_deb.py)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def package_deb() -> Path:
    """The amd64 .deb in dist/ (built by `make deb`, which `make test` runs before the package tests)."""
    if env := os.environ.get("LLM_TPU_DEB"):
        return Path(env)
    debs = sorted((REPO / "dist").glob("llm-tpu-appliance_*_amd64.deb"))
    if not debs:
        raise FileNotFoundError("no dist/llm-tpu-appliance_*_amd64.deb: run `make deb` first")
    return debs[-1]
