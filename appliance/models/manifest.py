"""The model manifest: ``manifest.json`` in every installed model directory.

A model directory holds the weights (a ``.bmodel`` or HF safetensors), the tokenizer files and this
manifest. The store knows models only through their manifests; a directory without one is not a model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from appliance.atomic import write_json_atomic
from appliance.engine.options import ENGINE_KINDS, EngineKind
from appliance.errors import ModelFormatError
from appliance.generation.templates import TEMPLATE_NAMES

__all__ = [
    "FAMILIES",
    "MANIFEST_NAME",
    "InstalledModel",
    "ModelFile",
    "ModelManifest",
    "read_manifest",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
FAMILIES: tuple[str, ...] = ("qwen", "qwen2", "llama", "baichuan2", "wizardcoder", "other")


@dataclass(frozen=True)
class ModelFile:
    path: str  # relative to the model directory
    size: int
    sha256: str
    role: str = "weights"  # "weights" | "tokenizer" | "config" | "other"


@dataclass(frozen=True)
class ModelManifest:
    name: str
    family: str
    engine: EngineKind
    files: tuple[ModelFile, ...]
    template: str = "tokenizer"
    max_seq_len: int = 2048
    quantization: str = "unknown"
    checksum: str = ""  # sha256 over the files' sha256 lines: one value that names this exact install
    source: str = ""
    memory_need_bytes: int | None = None
    default_system_prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.engine not in ENGINE_KINDS:
            raise ModelFormatError(
                f"manifest of {self.name!r}: engine {self.engine!r} is not one of {ENGINE_KINDS}"
            )
        if self.template not in TEMPLATE_NAMES:
            raise ModelFormatError(
                f"manifest of {self.name!r}: template {self.template!r} is not one of {TEMPLATE_NAMES}"
            )
        if self.max_seq_len < 2:
            raise ModelFormatError(f"manifest of {self.name!r}: max_seq_len {self.max_seq_len} is too small")

    @property
    def weights(self) -> tuple[ModelFile, ...]:
        return tuple(f for f in self.files if f.role == "weights")

    def with_checksum(self) -> ModelManifest:
        return replace(self, checksum=combined_checksum(self.files))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        data["manifest_version"] = MANIFEST_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], *, where: str = "manifest") -> ModelManifest:
        try:
            files = tuple(ModelFile(**f) for f in data.get("files", ()))
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "files"}
            return cls(files=files, **known)
        except TypeError as exc:
            raise ModelFormatError(f"{where} is not a valid model manifest: {exc}") from None


def combined_checksum(files: tuple[ModelFile, ...]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.sha256}  {f.path}\n".encode())
    return h.hexdigest()


def read_manifest(model_dir: Path) -> ModelManifest:
    path = model_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{model_dir} has no {MANIFEST_NAME}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(
            f"{path} cannot be read: {exc}", hint="reinstall the model (llm-tpu models pull/import)"
        ) from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} is not a JSON object")
    return ModelManifest.from_json(data, where=str(path))


def write_manifest(model_dir: Path, manifest: ModelManifest) -> Path:
    """Write the manifest atomically (temp file, fsync, rename)."""
    path = model_dir / MANIFEST_NAME
    write_json_atomic(path, manifest.to_json())
    return path


@dataclass(frozen=True)
class InstalledModel:
    """A model directory and its manifest (installed in the store, or given as a path)."""

    path: Path  # the model directory
    manifest: ModelManifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / str(self.manifest.extra.get("tokenizer_dir", "."))

    @property
    def weights_path(self) -> Path:
        weights = self.manifest.weights
        return self.path / weights[0].path if len(weights) == 1 else self.path
