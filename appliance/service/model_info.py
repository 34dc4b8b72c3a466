"""What the model-list routes report about a model: sizes, details, capabilities, parameters.

Sizes are measured, never guessed: ``size`` is the bytes of the model's files on disk, ``size_vram``
the TPU memory its bmodel needs (the manifest's figure, read from the bmodel when it was installed);
a model on the host or scripted engine holds no TPU memory, so its size_vram is 0.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from appliance.config.schema import GenerationDefaults
from appliance.models.directory import bmodel_net_names
from appliance.models.loader import LoadedModel
from appliance.models.manifest import InstalledModel
from appliance.models.store import ModelStore

__all__ = [
    "capabilities",
    "files_size",
    "find_installed",
    "installed_besides",
    "installed_entry",
    "installed_show",
    "iso_time",
    "loaded_entry",
    "model_info",
    "parameters_text",
    "sampling_mode",
    "size_vram",
]

TPU_ENGINES = frozenset({"sail", "bmrt"})


def iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def files_size(path: Path) -> int:
    """Bytes of the regular files at ``path`` (a file, or a directory walked without hidden entries)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            p = Path(root) / name
            if not name.startswith(".") and p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def model_path(m: LoadedModel) -> Path:
    return Path(str(m.details.get("path") or m.engine.info.model_path))


def size_vram(m: LoadedModel) -> int:
    if m.engine.info.kind not in TPU_ENGINES:
        return 0
    return int(m.details.get("memory_need_bytes") or 0)


def sampling_mode(m: LoadedModel) -> str:
    caps = m.engine.capabilities
    if not caps.returns_logits:
        return "greedy (fused head on the device)"
    return "device head (host for additive penalties)" if caps.device_sampling else "host"


def capabilities(*, tools: bool = False) -> list[str]:
    """Ollama's capability names a served model has: text completion, tools when its chat template renders
    them (known once it is loaded); no embeddings, no vision."""
    return ["completion", "tools"] if tools else ["completion"]


def _details(family: str, fmt: str, quantization: str) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": fmt,
        "family": family,
        "families": [family] if family else [],
        "parameter_size": "",
        "quantization_level": quantization,
    }


def loaded_entry(m: LoadedModel, modified: float) -> dict[str, Any]:
    """/api/tags's record of the loaded model."""
    return {
        "name": m.name,
        "model": m.name,
        "modified_at": iso_time(modified),
        "size": files_size(model_path(m)),
        "size_vram": size_vram(m),
        "digest": str(m.details.get("checksum") or ""),
        "details": _details(
            str(m.details.get("family", "")), m.engine.info.kind, str(m.details.get("quantization") or "")
        ),
    }


def installed_entry(model: InstalledModel) -> dict[str, Any]:
    man = model.manifest
    return {
        "name": man.name,
        "model": man.name,
        "modified_at": iso_time(model.path.stat().st_mtime),
        "size": sum(f.size for f in man.files) or files_size(model.path),
        "size_vram": (man.memory_need_bytes or 0) if man.engine in TPU_ENGINES else 0,
        "digest": man.checksum or "",
        "details": _details(man.family or "", man.engine, man.quantization or ""),
    }


def _nets(m: LoadedModel) -> list[str]:
    path = Path(m.engine.info.model_path)
    if path.suffix != ".bmodel" or not path.is_file():
        return []
    return bmodel_net_names(path)


def model_info(m: LoadedModel) -> dict[str, Any]:
    """Ollama's ``model_info`` (general.* and <arch>.context_length) plus ``llm_tpu.*`` figures."""
    family = str(m.details.get("family") or m.engine.info.kind)
    ctx = m.engine.limits.max_seq_len
    info: dict[str, Any] = {
        "general.architecture": family,
        "general.name": m.name,
        f"{family}.context_length": ctx,
        f"{family}.vocab_size": m.engine.limits.vocab_size,
        "llm_tpu.engine": m.engine.info.kind,
        "llm_tpu.context_length": ctx,
        "llm_tpu.sampling": sampling_mode(m),
        "llm_tpu.returns_logits": m.engine.capabilities.returns_logits,
        "llm_tpu.nets": _nets(m),
        "llm_tpu.memory_need_bytes": size_vram(m),
        "llm_tpu.template": m.generator.template.name,
    }
    info.update({f"llm_tpu.engine.{k}": v for k, v in m.engine.info.details.items()})
    return info


def parameters_text(m: LoadedModel, config: GenerationDefaults) -> str:
    """The defaults a request that sets no option gets, one ``name value`` a line (Ollama's format)."""
    lines = []
    for key, value in m.defaults(config).as_ollama().items():
        for one in value if isinstance(value, list | tuple) else [value]:
            lines.append(f"{key} {json_scalar(one)}")
    lines.append(f"num_ctx {m.engine.limits.max_seq_len}")
    return "\n".join(lines)


def json_scalar(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def installed_besides(served: LoadedModel | None) -> list[InstalledModel]:
    """The store's installed models, except the one ``served`` answers to (the model lists put it first)."""
    return [m for m in ModelStore().installed()[0] if served is None or not served.answers_to(m.name)]


def find_installed(name: str) -> InstalledModel | None:
    return next((m for m in ModelStore().installed()[0] if m.name == name), None)


def installed_show(model: InstalledModel) -> dict[str, Any]:
    """/api/show of an installed model that is not loaded: what its manifest knows (no engine yet)."""
    man = model.manifest
    entry = installed_entry(model)
    family = man.family or "other"
    info: dict[str, Any] = {
        "general.architecture": family,
        "general.name": man.name,
        "llm_tpu.engine": man.engine,
        "llm_tpu.memory_need_bytes": man.memory_need_bytes or 0,
        "llm_tpu.loaded": False,
    }
    if man.max_seq_len:
        info[f"{family}.context_length"] = info["llm_tpu.context_length"] = man.max_seq_len
    return {
        "modelfile": "",
        "parameters": "",
        "template": man.template,
        "details": entry["details"],
        "model_info": info,
        "capabilities": capabilities(),
        "modified_at": entry["modified_at"],
    }
