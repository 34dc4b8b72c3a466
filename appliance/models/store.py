"""The model store: installed models (directories with a manifest) and how a name resolves.

A model reference is, in order: empty / ``default`` / an alias of the embedded model; a path to a
model directory (with a manifest, or a plain Hugging Face directory), or to a ``.bmodel`` file; the
name of an installed model in one of the store roots (appliance.paths.model_dirs()).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance import paths
from appliance.bmodel.memory import bmodel_memory
from appliance.bmodel.reader import read_bmodel
from appliance.errors import ApplianceError, ModelFormatError, ModelNotFound
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.tokenizer_formats import FORMATS as TOKENIZER_FORMATS
from appliance.generation.tokenizer_formats import detect_format
from appliance.models import embedded
from appliance.models.manifest import (
    MANIFEST_NAME,
    InstalledModel,
    ModelFile,
    ModelManifest,
    read_manifest,
)

__all__ = ["TOKENIZER_FORMATS", "ModelStore", "check_tokenizer", "find_tokenizer_dir", "manifest_for_path"]

_FAMILIES = {
    "qwen2": "qwen2",
    "qwen": "qwen",
    "llama": "llama",
    "baichuan": "baichuan2",
    "gpt_bigcode": "wizardcoder",
}
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
)


def _describe(path: Path, role: str, base: Path) -> ModelFile:
    return ModelFile(path=str(path.relative_to(base)), size=path.stat().st_size, sha256="", role=role)


def _hf_manifest(model_dir: Path) -> ModelManifest:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{model_dir}/config.json cannot be read: {exc}") from None
    kind = str(config.get("model_type", ""))
    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not weights:
        raise ModelFormatError(f"{model_dir} has a config.json but no weights (*.safetensors)")
    files = [_describe(w, "weights", model_dir) for w in weights]
    files += [
        _describe(model_dir / f, "tokenizer", model_dir)
        for f in _TOKENIZER_FILES
        if (model_dir / f).is_file()
    ]
    return ModelManifest(
        name=model_dir.name,
        family=_FAMILIES.get(kind, "other"),
        engine="host",
        files=(*files, _describe(model_dir / "config.json", "config", model_dir)),
        template="tokenizer",
        max_seq_len=int(config.get("max_position_embeddings") or 2048),
        quantization=str(config.get("dtype") or config.get("torch_dtype") or "unknown"),
        source=str(model_dir),
    )


def bmodel_facts(bmodel: Path) -> dict[str, Any]:
    """SEQLEN and memory need from the bmodel itself (empty when it cannot be read, e.g. encrypted)."""
    try:
        info = read_bmodel(bmodel)
    except ApplianceError:
        return {}
    facts: dict[str, Any] = {"memory_need_bytes": bmodel_memory(info).total_bytes}
    for net in info.nets:
        if net.name == "embedding" and net.stages and net.stages[0].inputs:
            facts["max_seq_len"] = int(net.stages[0].inputs[0].shape[-1])
    return facts


def find_tokenizer_dir(base: Path) -> Path | None:
    """Where a bmodel's tokenizer lives: llm_convert's config/, the vendor's token_config/, beside it,
    or any subdirectory that holds a tokenizer in a known format (tokenizer_formats.py)."""
    preferred = [base / "config", base / "token_config", base]
    others = sorted(d for d in base.rglob("*") if d.is_dir() and d not in preferred)
    for d in [*preferred, *others]:
        if d.is_dir() and (detect_format(d) is not None or (d / "tokenizer_config.json").is_file()):
            return d
    return None


def check_tokenizer(base: Path, source: str) -> Path:
    """The tokenizer directory under ``base``, loaded once to prove it works (a clear error if not)."""
    tok_dir = find_tokenizer_dir(base)
    if tok_dir is None:
        raise ModelFormatError(
            f"{source} brought no tokenizer (none of tokenizer.json, *.tiktoken, tokenizer.model, "
            "vocab.json + merges.txt); nothing was installed",
            hint="pass --tokenizer DIR|URL|catalog-name with the model's tokenizer files",
        )
    ChatTokenizer.from_dir(tok_dir)  # raises what is wrong with it
    return tok_dir


def _tokenizer_dir(base: Path) -> Path:
    return find_tokenizer_dir(base) or base


def _bmodel_manifest(bmodel: Path) -> ModelManifest:
    base = bmodel.parent
    facts = bmodel_facts(bmodel)
    return ModelManifest(
        name=bmodel.stem,
        family="other",
        engine="auto",
        files=(_describe(bmodel, "weights", base),),
        template="tokenizer",
        max_seq_len=int(facts.get("max_seq_len", 2048)),
        source=str(bmodel),
        memory_need_bytes=facts.get("memory_need_bytes"),
        extra={"tokenizer_dir": str(_tokenizer_dir(base).relative_to(base))},
    )


def manifest_for_path(path: Path) -> InstalledModel:
    """An InstalledModel for a path given on the command line (installed or not)."""
    if path.is_file() and path.suffix == ".bmodel":
        return InstalledModel(path.parent, _bmodel_manifest(path))
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            return InstalledModel(path, read_manifest(path))
        if (path / "config.json").is_file():
            return InstalledModel(path, _hf_manifest(path))
        raise ModelFormatError(
            f"{path} is not a model directory",
            hint="a model directory has a manifest.json, or a Hugging Face config.json with safetensors",
        )
    raise ModelNotFound(f"{path} does not exist")


class ModelStore:
    def __init__(self, roots: list[Path] | None = None) -> None:
        self.roots = roots if roots is not None else paths.model_dirs()

    def installed(self) -> tuple[list[InstalledModel], list[str]]:
        """Installed models, and a problem line for each directory that is not a valid model."""
        found: dict[str, InstalledModel] = {}
        problems: list[str] = []
        for root in self.roots:
            if not root.is_dir():
                continue
            for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
                try:
                    model = InstalledModel(d, read_manifest(d))
                except ApplianceError as err:
                    problems.append(f"{d}: {err.message}")
                    continue
                found.setdefault(model.name, model)
        return list(found.values()), problems

    def resolve(self, ref: str | None) -> InstalledModel:
        if not ref or ref in embedded.ALIASES:
            return embedded.ensure_embedded_model()
        path = Path(ref).expanduser()
        if "/" in ref or path.suffix == ".bmodel" or (path.exists() and ref not in self._names()):
            return manifest_for_path(path)
        for root in self.roots:
            d = root / ref
            if d.is_dir():
                return InstalledModel(d, read_manifest(d))
        names = sorted(self._names() | {embedded.NAME})
        raise ModelNotFound(
            f"no model named {ref!r}",
            hint=f"installed: {', '.join(names)}; see `llm-tpu models list`, or pass a path to a model directory",
        )

    def _names(self) -> set[str]:
        return {m.name for m in self.installed()[0]}
