"""`llm-tpu models pull|import|rm|catalog`: install models into the store (registered by models_cmd)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import urlparse

from provisioning import install
from provisioning.catalog import catalog, find_entry
from provisioning.download import DFSS_HOST, dfss_download, download_file

__all__ = ["pull", "register_model_commands"]


def _name_from(ref: str) -> str:
    stem = Path(urlparse(ref).path if "://" in ref else ref.split(":", 1)[-1]).name
    return stem.removesuffix(".bmodel").removesuffix(".zip")


def pull(
    ref: str,
    *,
    name: str | None = None,
    sha256: str | None = None,
    tokenizer: str | None = None,
    progress: bool = True,
    root: Path | None = None,
) -> Path:
    """Catalog name, http(s) URL or dfss path (``sophon-demo/...`` or ``open@sophgo.com:...``)."""
    root = root or install.store_root()
    entry = find_entry(ref)
    name = name or (entry.name if entry else _name_from(ref))
    downloads = root / ".downloads" / name  # kept across attempts so that downloads resume

    def fetch(source: str, expected: str | None) -> Path:
        if source.startswith(("http://", "https://")):
            dest = downloads / Path(urlparse(source).path).name
            return download_file(source, dest, sha256=expected, progress=progress)
        return dfss_download(source, downloads, sha256=expected)

    weights = fetch(entry.dfss if entry else ref, sha256 or (entry.sha256 if entry else None))
    tok_source = tokenizer or (entry.tokenizer if entry else None)
    archives = [fetch(tok_source, None)] if tok_source else []
    source = f"{DFSS_HOST}:{entry.dfss}" if entry else ref
    path = install.install_files(
        name, [weights], entry=entry, source=source, move=True, archives=archives, root=root
    )
    for archive in archives:
        archive.unlink(missing_ok=True)
    if downloads.is_dir() and not any(p for p in downloads.iterdir() if not p.name.startswith(".")):
        import shutil

        shutil.rmtree(downloads, ignore_errors=True)
    return path


def _print(args: argparse.Namespace, data: dict[str, object], text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def run_pull(args: argparse.Namespace) -> int:
    path = pull(
        args.ref, name=args.name, sha256=args.sha256, tokenizer=args.tokenizer, progress=sys.stderr.isatty()
    )
    _print(args, {"installed": str(path)}, f"installed {path.name} in {path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    path = install.import_model(args.path, args.name)
    _print(args, {"installed": str(path)}, f"imported {path.name} into {path}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    path = install.remove_model(args.name)
    _print(args, {"removed": str(path)}, f"removed {args.name} ({path})")
    return 0


def run_catalog(args: argparse.Namespace) -> int:
    entries = catalog()
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2))
    else:
        for e in entries:
            print(f"{e.name:<22} {e.family:<12} {e.quantization:<5} seq {e.seq_len:<5} {DFSS_HOST}:{e.dfss}")
    return 0


def register_model_commands(msub: argparse._SubParsersAction) -> None:
    p = msub.add_parser(
        "pull",
        help="download and install a model",
        description="Download a model (catalog name, http(s) URL, or Sophgo dfss path) into the store. "
        "Downloads resume; the model appears only when complete and verified.",
    )
    p.add_argument("ref", help="catalog name (see `models catalog`), URL, or dfss path")
    p.add_argument("--name", help="install under this name")
    p.add_argument("--sha256", help="expected sha256 of the weights")
    p.add_argument("--tokenizer", help="URL or dfss path of a tokenizer .zip to unpack next to the weights")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_pull)
    i = msub.add_parser("import", help="install a model from a directory or .bmodel file")
    i.add_argument("path", type=Path, help="model directory or .bmodel file")
    i.add_argument("--name", help="install under this name")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=run_import)
    r = msub.add_parser("rm", help="remove an installed model")
    r.add_argument("name", help="installed model name")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=run_rm)
    c = msub.add_parser("catalog", help="list the models `models pull` knows by name")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=run_catalog)
