"""The model store: installed models (directories with a manifest) and how a name resolves.

A model reference is, in order: empty / ``default`` / an alias of the embedded model; a path to a
model directory (with a manifest, or a plain Hugging Face directory), or to a ``.bmodel`` file; the
name of an installed model in one of the store roots (appliance.paths.model_dirs()).
"""

from __future__ import annotations

from pathlib import Path

from appliance import paths
from appliance.errors import ApplianceError, ModelFormatError, ModelNotFound
from appliance.models import embedded
from appliance.models.directory import bmodel_file_manifest, hf_directory_manifest
from appliance.models.manifest import MANIFEST_NAME, InstalledModel, read_manifest

__all__ = ["ModelStore", "manifest_for_path"]


def manifest_for_path(path: Path) -> InstalledModel:
    """An InstalledModel for a path given on the command line (installed or not)."""
    if path.is_file() and path.suffix == ".bmodel":
        return InstalledModel(path.parent, bmodel_file_manifest(path))
    if path.is_dir():
        if (path / MANIFEST_NAME).is_file():
            return InstalledModel(path, read_manifest(path))
        if (path / "config.json").is_file():
            return InstalledModel(path, hf_directory_manifest(path))
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
