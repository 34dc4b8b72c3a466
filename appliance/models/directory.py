"""What a model directory holds, and the manifest built from it.

One place knows the files of a model: which are weights, which belong to the tokenizer (one list, one
role rule), where a bmodel's tokenizer lives, and what the bmodel itself says (SEQLEN, memory need). The
store (a path given on the command line), the embedded model and the installer all build their
manifests here.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath
from typing import Any

from appliance.atomic import sha256_file
from appliance.bmodel.memory import bmodel_memory
from appliance.bmodel.reader import read_bmodel
from appliance.errors import ApplianceError, ModelFormatError
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.tokenizer_formats import FORMATS as TOKENIZER_FORMATS
from appliance.generation.tokenizer_formats import detect_format
from appliance.models.manifest import MANIFEST_NAME, ModelFile, ModelManifest

__all__ = [
    "CONFIG_FILES",
    "TOKENIZER_FILES",
    "TOKENIZER_FORMATS",
    "WEIGHT_SUFFIXES",
    "bmodel_facts",
    "bmodel_file_manifest",
    "bmodel_net_names",
    "build_manifest",
    "check_tokenizer",
    "describe_files",
    "file_role",
    "find_tokenizer_dir",
    "has_tokenizer",
    "hf_directory_manifest",
]

WEIGHT_SUFFIXES = (".bmodel", ".safetensors")
CONFIG_FILES = ("config.json", "generation_config.json")
# Tokenizer files by name (any file with "token" in its path counts too, e.g. token_config/...).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "qwen.tiktoken",
    "tokenization_qwen.py",
    "special_tokens_map.json",
)

_FAMILIES = {
    "qwen2": "qwen2",
    "qwen": "qwen",
    "llama": "llama",
    "baichuan": "baichuan2",
    "gpt_bigcode": "wizardcoder",
}


def file_role(rel: str) -> str:
    """The role of a file in a model directory: "weights", "config", "tokenizer" or "other"."""
    name = PurePath(rel).name
    if name.endswith(WEIGHT_SUFFIXES):
        return "weights"
    if name in CONFIG_FILES:
        return "config"
    if name in TOKENIZER_FILES or "token" in rel.lower():
        return "tokenizer"
    return "other"


def _describe(path: Path, base: Path, role: str, checksums: bool) -> ModelFile:
    sha = sha256_file(path) if checksums else ""
    return ModelFile(path=str(path.relative_to(base)), size=path.stat().st_size, sha256=sha, role=role)


def describe_files(model_dir: Path, *, checksums: bool = True) -> tuple[ModelFile, ...]:
    """Every file under ``model_dir`` (but the manifest and hidden ones), with its role and sha256."""
    paths = sorted(
        p
        for p in model_dir.rglob("*")
        if p.is_file()
        and p.name != MANIFEST_NAME
        and not any(part.startswith(".") for part in p.relative_to(model_dir).parts)
    )
    return tuple(_describe(p, model_dir, file_role(str(p.relative_to(model_dir))), checksums) for p in paths)


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


def bmodel_net_names(bmodel: Path) -> list[str]:
    """The nets a bmodel holds, in file order (empty when it cannot be read, e.g. encrypted)."""
    try:
        return [net.name for net in read_bmodel(bmodel).nets]
    except ApplianceError:
        return []


def has_tokenizer(directory: Path) -> bool:
    """Whether ``directory`` itself holds a tokenizer in a known format (tokenizer_formats.py)."""
    return detect_format(directory) is not None


def find_tokenizer_dir(base: Path) -> Path | None:
    """Where a bmodel's tokenizer lives: llm_convert's config/, the vendor's token_config/, beside it,
    or any subdirectory that holds a tokenizer in a known format (tokenizer_formats.py)."""
    preferred = [base / "config", base / "token_config", base]
    others = sorted(d for d in base.rglob("*") if d.is_dir() and d not in preferred)
    for d in [*preferred, *others]:
        if d.is_dir() and (has_tokenizer(d) or (d / "tokenizer_config.json").is_file()):
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


def hf_directory_manifest(model_dir: Path) -> ModelManifest:
    """The manifest of a plain Hugging Face directory given by path (no checksums: nothing is installed)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{model_dir}/config.json cannot be read: {exc}") from None
    kind = str(config.get("model_type", ""))
    files = [f for f in describe_files(model_dir, checksums=False) if f.role != "other"]
    if not any(f.role == "weights" for f in files):  # an older checkpoint: pytorch_model*.bin
        files += [_describe(p, model_dir, "weights", False) for p in sorted(model_dir.glob("*.bin"))]
    if not any(f.role == "weights" for f in files):
        raise ModelFormatError(f"{model_dir} has a config.json but no weights (*.safetensors)")
    return ModelManifest(
        name=model_dir.name,
        family=_FAMILIES.get(kind, "other"),
        engine="host",
        files=tuple(files),
        template="tokenizer",
        max_seq_len=int(config.get("max_position_embeddings") or 2048),
        quantization=str(config.get("dtype") or config.get("torch_dtype") or "unknown"),
        source=str(model_dir),
    )


def bmodel_file_manifest(bmodel: Path) -> ModelManifest:
    """The manifest of a single .bmodel given by path; its tokenizer is looked for beside it."""
    base = bmodel.parent
    facts = bmodel_facts(bmodel)
    tok_dir = find_tokenizer_dir(base) or base
    return ModelManifest(
        name=bmodel.stem,
        family="other",
        engine="auto",
        files=(_describe(bmodel, base, "weights", False),),
        template="tokenizer",
        max_seq_len=int(facts.get("max_seq_len", 2048)),
        source=str(bmodel),
        memory_need_bytes=facts.get("memory_need_bytes"),
        extra={"tokenizer_dir": str(tok_dir.relative_to(base))},
    )


def build_manifest(
    model_dir: Path,
    name: str,
    *,
    source: str,
    fields: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> ModelManifest:
    """The manifest of a model directory about to be installed: every file checksummed, facts read from
    the bmodel, the tokenizer directory found. ``fields`` are manifest fields known from elsewhere (a
    catalog entry, a previous manifest); the bmodel's own SEQLEN and memory need win over them."""
    files = describe_files(model_dir)
    weights = [f for f in files if f.role == "weights"]
    if not weights:
        raise ModelFormatError(f"{source} holds no weights (.bmodel or .safetensors)")
    fields = dict(fields or {})
    fields.setdefault("family", "other")
    fields.setdefault("engine", "auto")
    bmodels = [model_dir / w.path for w in weights if w.path.endswith(".bmodel")]
    if bmodels:
        fields.update(bmodel_facts(bmodels[0]))
    extra = {**fields.pop("extra", {}), **(extra or {})}
    tok_dir = find_tokenizer_dir(model_dir)
    if tok_dir is not None:
        extra["tokenizer_dir"] = str(tok_dir.relative_to(model_dir))
    return ModelManifest(name=name, files=files, source=source, extra=extra, **fields).with_checksum()
