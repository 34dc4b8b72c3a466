"""llm-tpu-appliance: a private LLM chat appliance for Sophgo BM1684X boxes."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
