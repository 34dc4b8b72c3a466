"""Where ``models compile SRC`` finds a Hugging Face directory: the directory itself, a GGUF file
(dequantized once to f32 safetensors in the cache, as the embedded model is), or ``embedded``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from appliance import paths
from appliance.errors import ModelFormatError, ModelNotFound
from appliance.models import embedded

__all__ = ["TOKENIZER_FILES", "has_tokenizer", "resolve_source"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "qwen.tiktoken")


def has_tokenizer(src: Path) -> bool:
    return any((src / n).is_file() for n in TOKENIZER_FILES)


def _gguf_dir(gguf: Path) -> Path:
    h = hashlib.sha256()
    with open(gguf, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    target = paths.cache_dir() / "gguf" / f"{gguf.stem}-{h.hexdigest()[:16]}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        embedded.convert_gguf(gguf, tmp)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_source(ref: str) -> tuple[Path, str]:
    """(Hugging Face directory, a description of the source for the manifest)."""
    if ref in embedded.ALIASES or ref == "embedded":
        model = embedded.ensure_embedded_model()
        return model.path, model.manifest.source or f"embedded:{embedded.NAME}"
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelNotFound(
            f"{path} does not exist", hint="give a Hugging Face model directory, a .gguf file or 'embedded'"
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelFormatError(f"{path} is not a model directory or a .gguf file")
        return _gguf_dir(path), f"gguf:{path.resolve()}"
    return path, str(path.resolve())
