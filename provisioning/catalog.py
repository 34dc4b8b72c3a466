"""The catalog of known models (catalog.json): where the vendor publishes them and what they are.

Every entry names its family, quantization, SEQLEN, chat template, the vendor's own file name on the
dfss server, its tokenizer (a dfss archive, or none when the vendor ships it elsewhere), the tokenizer
format inside, and the TPU memory to plan for before the bmodel itself can be read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import PurePosixPath
from typing import Any, Literal

from appliance.errors import ModelFormatError, ModelNotFound
from appliance.models.directory import TOKENIZER_FORMATS
from appliance.models.manifest import FAMILIES, TEMPLATE_NAMES

__all__ = ["CatalogEntry", "catalog", "find_entry", "require_entry"]


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    family: str
    quantization: str
    seq_len: int
    template: str
    dfss: str  # path on the vendor's server; its last part is the vendor's file name
    tokenizer: str | None = None  # dfss path or URL of the tokenizer archive; None: the vendor ships none
    tokenizer_format: str = "fast"
    memory_mib: int = 0
    memory_source: Literal["vendor", "estimate"] = "estimate"
    params: str = ""
    devices: int = 1
    sha256: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.family not in FAMILIES:
            problems.append(f"family {self.family!r} is not one of {FAMILIES}")
        if self.template not in TEMPLATE_NAMES:
            problems.append(f"template {self.template!r} is not one of {TEMPLATE_NAMES}")
        if self.tokenizer_format not in TOKENIZER_FORMATS:
            problems.append(f"tokenizer_format {self.tokenizer_format!r} is not one of {TOKENIZER_FORMATS}")
        if self.seq_len < 2 or self.memory_mib <= 0 or self.devices < 1:
            problems.append("seq_len, memory_mib and devices must be positive")
        if problems:
            raise ModelFormatError(f"catalog entry {self.name!r}: " + "; ".join(problems))

    @property
    def vendor_file(self) -> str:
        return PurePosixPath(self.dfss).name

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "vendor_file": self.vendor_file}


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
