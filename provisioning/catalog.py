"""The catalog of known models (catalog.json): where the vendor publishes them and what they are."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from appliance.errors import ModelNotFound

__all__ = ["CatalogEntry", "catalog", "find_entry", "require_entry"]


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    family: str
    quantization: str
    seq_len: int
    template: str
    dfss: str
    tokenizer: str | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def catalog() -> list[CatalogEntry]:
    data = json.loads(resources.files("provisioning").joinpath("catalog.json").read_text(encoding="utf-8"))
    return [CatalogEntry(**entry) for entry in data["models"]]


def find_entry(name: str) -> CatalogEntry | None:
    wanted = name.lower()
    return next((e for e in catalog() if e.name == wanted), None)


def require_entry(name: str) -> CatalogEntry:
    entry = find_entry(name)
    if entry is None:
        names = ", ".join(e.name for e in catalog())
        raise ModelNotFound(f"no catalog model named {name!r}", hint=f"known: {names}; or pass a URL")
    return entry
