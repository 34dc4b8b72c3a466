"""Crash-safe writes: files and whole directories appear complete or not at all.

- :func:`write_json_atomic`: a temp file in the same directory, fsync, rename, fsync the directory.
- :func:`staged_directory`: a hidden sibling directory, filled by the caller, fsync'ed, then renamed
  over the destination (an existing one is swapped out first, then deleted).
- :func:`sha256_file`, :func:`fsync_dir`, :func:`fsync_tree`: the pieces, for code that needs them alone.

After a power cut a file or directory is either the old one or the new one, never half-written; what a
crash leaves behind is hidden (``.staging-*``, ``.trash-*``) and swept by :func:`remove_stale_staging`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "fsync_dir",
    "fsync_tree",
    "remove_directory",
    "remove_stale_staging",
    "sha256_file",
    "staged_directory",
    "write_json_atomic",
]

STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks (model weights are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (and ``root`` itself) before it is renamed into place."""
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with open(Path(dirpath) / f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(dirpath))


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _trash_path(dest: Path) -> Path:
    return dest.with_name(f"{TRASH_PREFIX}{dest.name}-{os.getpid()}")


def _replace_directory(new: Path, dest: Path) -> None:
    """Rename ``new`` into place; an existing ``dest`` is swapped out, then deleted."""
    old = None
    if dest.exists():
        old = _trash_path(dest)
        os.replace(dest, old)
    os.replace(new, dest)
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_directory(dest: Path) -> None:
    """Remove ``dest`` in one step (a rename to a hidden trash name), then delete its bytes."""
    trash = _trash_path(dest)
    os.replace(dest, trash)
    shutil.rmtree(trash, ignore_errors=True)


def remove_stale_staging(root: Path) -> None:
    """Delete what an interrupted :func:`staged_directory` or :func:`remove_directory` left in ``root``."""
    for stale in [*root.glob(f"{STAGING_PREFIX}*"), *root.glob(f"{TRASH_PREFIX}*")]:
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(dest: Path) -> Iterator[Path]:
    """A hidden staging directory beside ``dest``, renamed to ``dest`` only when the block succeeds.

    An error or an interruption leaves no half-made ``dest``: the staging directory is removed (or, after
    a crash, swept by :func:`remove_stale_staging`).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{dest.name}-", dir=dest.parent))
    try:
        yield staging
        fsync_tree(staging)
        _replace_directory(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
