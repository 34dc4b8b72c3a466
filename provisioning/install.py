"""Install models into the store atomically: ``<store>/<name>/`` with files and a manifest.

Everything is assembled in a hidden staging directory on the same file system (the store ignores
dot-directories), checksummed, given its manifest, fsync'ed and only then renamed into place. A crash or
a full disk leaves at most a hidden directory that the next run cleans up; downloads are kept in
``<store>/.downloads/<name>/`` so that they resume.
"""

from __future__ import annotations

import contextlib
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance import paths
from appliance.atomic import remove_directory, remove_stale_staging, staged_directory
from appliance.errors import DownloadError, ModelNotFound
from appliance.models.directory import build_manifest, check_tokenizer, file_role
from appliance.models.manifest import MANIFEST_NAME, ModelManifest, read_manifest, write_manifest
from provisioning.catalog import CatalogEntry

__all__ = ["import_model", "install_files", "remove_model", "store_root"]


def store_root() -> Path:
    return paths.model_dirs()[0]


def _manifest_for(
    staging: Path,
    name: str,
    *,
    base: ModelManifest | None,
    entry: CatalogEntry | None,
    source: str,
    extra: dict[str, Any] | None = None,
) -> ModelManifest:
    fields: dict[str, Any] = {}
    if base is not None:
        fields = {
            k: getattr(base, k) for k in ("family", "engine", "template", "max_seq_len", "quantization")
        }
        fields["default_system_prompt"] = base.default_system_prompt
        fields["extra"] = dict(base.extra)
    if entry is not None:
        fields.update(
            family=entry.family,
            template=entry.template,
            quantization=entry.quantization,
            max_seq_len=entry.seq_len,
        )
    return build_manifest(staging, name, source=source, fields=fields, extra=extra)


def install_files(
    name: str,
    files: list[Path],
    *,
    entry: CatalogEntry | None = None,
    base: ModelManifest | None = None,
    source: str = "",
    move: bool = False,
    archives: list[Path] | None = None,
    tokenizer_dirs: list[Path] | None = None,
    require_tokenizer: bool = False,
    extra: dict[str, Any] | None = None,
    root: Path | None = None,
) -> Path:
    """Install ``files`` (and unpacked ``archives``, e.g. token_config.zip, and copies of
    ``tokenizer_dirs`` under token_config/) as model ``name``.

    ``extra`` goes into the manifest's ``extra``. ``require_tokenizer``: refuse, before anything is installed, when the result holds no tokenizer
    that loads (a bare .bmodel cannot chat).
    """
    root = root or store_root()
    with _staged(root, name, f"install {name}") as staging:
        for archive in archives or []:
            try:
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(staging)
            except zipfile.BadZipFile:
                raise DownloadError(f"{archive.name} is not a valid zip archive") from None
        for tok_dir in tokenizer_dirs or []:  # its tokenizer files only, never weights found beside them
            shutil.copytree(tok_dir, staging / "token_config", dirs_exist_ok=True, ignore=_not_tokenizer)
        if require_tokenizer:  # before the weights move: a refusal keeps the download to resume from
            check_tokenizer(staging, source)
        for f in files:
            (shutil.move if move else shutil.copy2)(str(f), str(staging / f.name))
        manifest = _manifest_for(staging, name, base=base, entry=entry, source=source, extra=extra)
        write_manifest(staging, manifest)
    return root / name


def _not_tokenizer(directory: str, names: list[str]) -> set[str]:
    return {
        n for n in names if n.startswith(".") or file_role(n) == "weights" or n.endswith((".bin", ".gguf"))
    }


def import_model(src: Path, name: str | None = None, *, root: Path | None = None) -> Path:
    """Copy a directory (with or without a manifest) or a single .bmodel into the store."""
    if not src.exists():
        raise ModelNotFound(f"{src} does not exist")
    if src.is_file():
        return install_files(name or src.stem, [src], source=str(src), root=root)
    base = read_manifest(src) if (src / MANIFEST_NAME).is_file() else None
    name = name or (base.name if base else src.name)
    root = root or store_root()
    with _staged(root, name, f"import {src}") as staging:
        shutil.copytree(src, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST_NAME, ".*"))
        write_manifest(staging, _manifest_for(staging, name, base=base, entry=None, source=str(src)))
    return root / name


@contextlib.contextmanager
def _staged(root: Path, name: str, action: str) -> Iterator[Path]:
    """A hidden staging directory in the store (the store ignores dot-directories), renamed into place
    only when the block succeeds (appliance.atomic.staged_directory).

    A full disk, an error or an interruption leaves no half-installed model (the staging directory is
    removed, or swept by the next install).
    """
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(root)
    try:
        with staged_directory(root / name) as staging:
            yield staging
    except OSError as exc:
        raise DownloadError(
            f"cannot {action}: {exc.strerror}", hint=f"check free space and permissions of {root}"
        ) from None


def remove_model(name: str, *, root: Path | None = None) -> Path:
    root = root or store_root()
    dest = root / name
    if not (dest / MANIFEST_NAME).is_file():
        raise ModelNotFound(f"no installed model {name!r} in {root}", hint="see `llm-tpu models list`")
    remove_directory(dest)  # gone from the store in one step; deleting the bytes may take a while
    return dest
