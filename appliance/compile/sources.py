"""Where ``models compile SRC`` finds a Hugging Face directory: the directory itself, a GGUF file
(dequantized once to f32 safetensors in the cache, as the embedded model is), or ``embedded``.
"""

from __future__ import annotations

from pathlib import Path

from appliance import paths
from appliance.atomic import sha256_file, staged_directory
from appliance.errors import ModelFormatError, ModelNotFound
from appliance.models import embedded

__all__ = ["resolve_source"]


def _gguf_dir(gguf: Path) -> Path:
    target = paths.cache_dir() / "gguf" / f"{gguf.stem}-{sha256_file(gguf, 1 << 22)[:16]}"
    if (target / "config.json").is_file():
        return target
    with staged_directory(target) as tmp:
        embedded.convert_gguf(gguf, tmp)
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
