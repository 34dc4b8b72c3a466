"""`models pull`: download a model (catalog name, URL or dfss path) and its tokenizer, then install it.

A bare ``.bmodel`` cannot chat: without a tokenizer (the catalog's archive, or ``--tokenizer DIR|URL|
ZIP|catalog-name``) it is refused before anything is downloaded; a tokenizer that does not load is
refused before the weights are installed, and the download stays for the next attempt.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

from appliance.errors import DownloadError
from appliance.models.names import check_model_name, derive_model_name
from provisioning.catalog import CatalogEntry, catalog, find_entry
from provisioning.download import DFSS_HOST, dfss_download, download_file
from provisioning.install import install_files, store_root

__all__ = ["pull"]


def _name_from(ref: str) -> str:
    stem = Path(urlparse(ref).path if "://" in ref else ref.split(":", 1)[-1]).name
    return stem.removesuffix(".bmodel").removesuffix(".zip")


def _bare_bmodel_refused(ref: str, entry: CatalogEntry | None) -> DownloadError:
    if entry is not None:
        where = (
            f"the vendor publishes no tokenizer archive for {entry.name} (its {entry.tokenizer_format} "
            "files live in the vendor's LLM-TPU repository)"
        )
    else:
        where = f"{ref} is a bare .bmodel: the weights alone cannot chat"
    return DownloadError(
        f"{where}; nothing was downloaded",
        hint="pass --tokenizer DIR (a directory with the tokenizer files), --tokenizer URL (a .zip), "
        "or --tokenizer CATALOG-NAME (that model's tokenizer archive)",
    )


def _tokenizer_plan(tokenizer: str | None, entry: CatalogEntry | None) -> tuple[Path | None, str | None]:
    """(local tokenizer directory, archive to fetch) for ``--tokenizer DIR|URL|ZIP|catalog-name``."""
    if tokenizer is None:
        return None, entry.tokenizer if entry else None
    local = Path(tokenizer).expanduser()
    if local.is_dir():
        return local, None
    if local.is_file():
        return None, str(local)
    named = find_entry(tokenizer)
    if named is not None:
        if named.tokenizer is None:
            raise DownloadError(
                f"--tokenizer {tokenizer}: that catalog model has no tokenizer archive either",
                hint="pass --tokenizer DIR with the tokenizer files",
            )
        return None, named.tokenizer
    if tokenizer.startswith(("http://", "https://", DFSS_HOST + ":")) or "/" in tokenizer:
        return None, tokenizer
    names = ", ".join(e.name for e in catalog())
    raise DownloadError(
        f"--tokenizer {tokenizer!r} is neither a directory, a file, a URL nor a catalog name",
        hint=f"catalog names: {names}",
    )


def pull(
    ref: str,
    *,
    name: str | None = None,
    sha256: str | None = None,
    tokenizer: str | None = None,
    progress: bool = True,
    root: Path | None = None,
) -> Path:
    """Catalog name, http(s) URL or dfss path (``sophon-demo/...`` or ``open@sophgo.com:...``).

    A bare ``.bmodel`` needs a tokenizer (the catalog's archive, or ``tokenizer``): without one it is
    refused before anything is downloaded, and a tokenizer that does not load is refused before the
    model is installed.
    """
    if name is not None:
        check_model_name(name)  # before anything is downloaded
    root = root or store_root()
    entry = find_entry(ref)
    name = name or (entry.name if entry else derive_model_name(_name_from(ref)))
    weights_ref = entry.dfss if entry else ref
    tok_dir, tok_archive = _tokenizer_plan(tokenizer, entry)
    if weights_ref.endswith(".bmodel") and tok_dir is None and tok_archive is None:
        raise _bare_bmodel_refused(ref, entry)
    downloads = root / ".downloads" / name  # kept across attempts so that downloads resume

    def fetch(source: str, expected: str | None) -> Path:
        if Path(source).is_file():
            return Path(source)
        if source.startswith(("http://", "https://")):
            dest = downloads / Path(urlparse(source).path).name
            return download_file(source, dest, sha256=expected, progress=progress)
        return dfss_download(source, downloads, sha256=expected, progress=progress)

    archives = [fetch(tok_archive, None)] if tok_archive else []  # small: fetched first, fails early
    expected = sha256 or (entry.sha256 if entry else None)
    weights = fetch(weights_ref, expected)
    source = f"{DFSS_HOST}:{entry.dfss}" if entry else ref
    path = install_files(
        name,
        [weights],
        entry=entry,
        source=source,
        move=weights.is_relative_to(downloads),  # never move a file the user pointed at
        archives=archives,
        tokenizer_dirs=[tok_dir] if tok_dir else [],
        require_tokenizer=weights.suffix == ".bmodel",
        # Where the vendor publishes no checksum, the one of this verified download is the reference.
        extra={"weights_sha256_source": "given" if expected else "first download"},
        root=root,
    )
    for archive in archives:
        if archive.is_relative_to(downloads):
            archive.unlink(missing_ok=True)
    if downloads.is_dir() and not any(p for p in downloads.iterdir() if not p.name.startswith(".")):
        shutil.rmtree(downloads, ignore_errors=True)
    return path
