"""Where the tests find the vendor runtime that scripts/fetch-vendor-runtime.sh extracted.

``LLM_TPU_VENDOR_DIR`` may name the versioned directory itself or its parent (the script's DEST);
the default is ``<repo>/.cache/vendor/tpu-mlir-1.30.2``. ``make unit`` runs the script first.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSION_DIR = "tpu-mlir-1.30.2"
FIXTURES = REPO / "tests" / "fixtures" / "tiny-qwen2"


def vendor_dir() -> Path:
    env = os.environ.get("LLM_TPU_VENDOR_DIR")
    if env:
        base = Path(env)
        return base if (base / "bin" / "model_tool").exists() else base / VERSION_DIR
    return REPO / ".cache" / "vendor" / VERSION_DIR


def model_tool() -> Path:
    return vendor_dir() / "bin" / "model_tool"


def cmodel_libdir() -> Path:
    return vendor_dir() / "lib"


def require_vendor_runtime() -> Path:
    """The vendor dir, or an AssertionError that says how to get it (never a silent skip)."""
    d = vendor_dir()
    assert (d / "bin" / "model_tool").exists() and (d / "lib" / "libbmrt.so.1.0").exists(), (
        f"vendor runtime missing in {d}: run scripts/fetch-vendor-runtime.sh (make unit does)"
    )
    return d
