"""`llm-tpu models list|info|pull|import|rm|catalog`: list, inspect and install models.

The one home of the models subcommands; the work is done by appliance.models (store, manifests) and
provisioning.install (downloads, atomic installs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from appliance.bmodel.report import print_bmodel_info
from appliance.cli.compile_cmd import register_compile_command
from appliance.client import ServiceClient, find_socket
from appliance.engine.host import host_context
from appliance.errors import ApplianceError
from appliance.models import embedded
from appliance.models.manifest import InstalledModel, ModelManifest, read_manifest
from appliance.models.store import ModelStore
from provisioning import install
from provisioning.catalog import catalog
from provisioning.catalog_fit import catalog_fits
from provisioning.pull import pull
from provisioning.settings import load_settings


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _row(m: InstalledModel, note: str = "") -> dict[str, Any]:
    return {
        "name": m.name,
        "family": m.manifest.family,
        "engine": m.manifest.engine,
        "quantization": m.manifest.quantization,
        "max_seq_len": _context(m.manifest),
        "size": sum(f.size for f in m.manifest.files),
        "path": str(m.path),
        "note": note,
    }


def _context(manifest: ModelManifest) -> int:
    """The context the model gets when served: the host engine caps its KV cache (what /api/status says)."""
    return host_context(manifest.max_seq_len) if manifest.engine == "host" else manifest.max_seq_len


def _embedded_row() -> dict[str, Any] | None:
    """The embedded default (converted once into the cache; listed even before that, from the wheel)."""
    try:
        gguf = embedded.gguf_path()
    except ApplianceError:
        return None
    converted = embedded.converted_model()
    if converted is not None:
        return _row(converted, "embedded default (used when no --model is given)")
    return {
        "name": embedded.NAME,
        "family": "llama",
        "engine": "host",
        "quantization": "Q4_1",
        "max_seq_len": host_context(embedded.MAX_SEQ_LEN),
        "size": gguf.stat().st_size,
        "path": str(gguf),
        "note": "embedded default (converted on first use)",
    }


def _serving() -> dict[str, Any] | None:
    """What the running service serves, if one answers on the usual sockets."""
    try:
        with ServiceClient.for_socket(find_socket(), timeout=5.0) as client:
            model = client.status().get("model") or {}
    except ApplianceError:
        return None
    return {"name": model.get("name"), "path": model.get("path"), "max_seq_len": model.get("max_seq_len")}


def run_list(args: argparse.Namespace) -> int:
    store = ModelStore()
    models, problems = store.installed()
    rows = [_row(m) for m in models]
    embedded_row = _embedded_row()
    serving = _serving()
    if args.json:
        data = {
            "models": rows,
            "embedded": embedded_row is not None,
            "embedded_model": embedded_row,
            "serving": serving,
            "problems": problems,
        }
        print(json.dumps(data, indent=2))
        return 0
    shown = [*rows, *([embedded_row] if embedded_row else [])]
    if shown:
        print(f"  {'NAME':<28} {'FAMILY':<11} {'ENGINE':<6} {'QUANT':<14} {'SEQ':>6} {'SIZE':>10}  NOTE")
        for r in shown:
            mark = "*" if serving and serving.get("name") in (r["name"],) else " "
            print(
                f"{mark} {r['name']:<28} {r['family']:<11} {r['engine']:<6} {str(r['quantization'])[:14]:<14} "
                f"{r['max_seq_len']:>6} {_human(float(r['size'])):>10}  {r['note']}"
            )
    if not rows:
        print("no models installed in " + ", ".join(str(r) for r in store.roots) + " (llm-tpu models pull)")
    if serving:
        print(f"* served now by the running service: {serving['name']}")
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)
    return 0


def run_info(args: argparse.Namespace) -> int:
    path = Path(args.model).expanduser()
    if path.suffix == ".bmodel" and path.is_file():
        return print_bmodel_info(path, as_json=args.json)
    model = ModelStore().resolve(args.model)
    data = model.manifest.to_json()
    data["path"] = str(model.path)
    data["max_seq_len"] = _context(model.manifest)
    if data["max_seq_len"] != model.manifest.max_seq_len:
        data["trained_max_seq_len"] = model.manifest.max_seq_len
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for key in (
        "name",
        "family",
        "engine",
        "template",
        "quantization",
        "max_seq_len",
        "source",
        "path",
        "checksum",
    ):
        print(f"{key:<13} {data.get(key)}")
    if "trained_max_seq_len" in data:
        print(
            f"{'':<13} (trained for {data['trained_max_seq_len']}; the host engine's KV cache holds "
            f"{data['max_seq_len']})"
        )
    print("files:")
    for f in model.manifest.files:
        print(f"  {f.path:<40} {_human(f.size):>10}  {f.role}")
    return 0


def _print(args: argparse.Namespace, data: dict[str, object], text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def run_pull(args: argparse.Namespace) -> int:
    path = pull(
        args.ref, name=args.name, sha256=args.sha256, tokenizer=args.tokenizer, progress=sys.stderr.isatty()
    )
    manifest = read_manifest(path)
    sha = manifest.weights[0].sha256 if manifest.weights else ""
    recorded = manifest.extra.get("weights_sha256_source") == "first download"
    data = {
        "installed": str(path),
        "sha256": sha,
        "sha256_source": manifest.extra.get("weights_sha256_source"),
    }
    _print(args, data, f"installed {path.name} in {path}")
    if recorded and not args.json:
        print(
            f"note: no published checksum for {path.name}: recorded sha256 {sha} of this download "
            "in its manifest (compare it with another box's `llm-tpu models info`)",
            file=sys.stderr,
        )
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
    fits, problems = catalog_fits(catalog(), load_settings(args.config, sysroot=args.sysroot))
    if args.json:
        print(json.dumps([f.to_json() for f in fits], indent=2))
    else:
        cap = fits[0].capacity_mib if fits else None
        print(f"TPU memory for a model on this box: {f'{cap} MiB' if cap is not None else 'unknown'}")
        print(
            f"{'NAME':<22} {'FAMILY':<11} {'QUANT':<5} {'SEQ':>5} {'TOKENIZER':<13} {'NEED':>6}  {'FITS':<8} FILE"
        )
        for f in fits:
            e = f.entry
            need = f"{f.need_mib}{'' if e.memory_source == 'vendor' else '~'}"
            print(
                f"{e.name:<22} {e.family:<11} {e.quantization:<5} {e.seq_len:>5} {e.tokenizer_format:<13} "
                f"{need:>6}  {f.verdict:<8} {e.vendor_file}"
            )
        print(
            "NEED is MiB with the margin: the vendor README's threshold, or an estimate (~) until the bmodel "
            "is read; `llm-tpu provision check --model NAME` decides after `models pull`."
        )
    for line in problems:
        print(f"note: {line}", file=sys.stderr)
    return 0


def _register_install_commands(msub: argparse._SubParsersAction) -> None:
    p = msub.add_parser(
        "pull",
        help="download and install a model",
        description="Download a model (catalog name, http(s) URL, or Sophgo dfss path) into the store. "
        "Downloads resume; the model appears only when complete and verified.",
    )
    p.add_argument("ref", help="catalog name (see `models catalog`), URL, or dfss path")
    p.add_argument("--name", help="install under this name")
    p.add_argument("--sha256", help="expected sha256 of the weights")
    p.add_argument(
        "--tokenizer",
        metavar="DIR|URL|NAME",
        help="the tokenizer for a bare .bmodel: a directory of tokenizer files, a .zip (file, URL or dfss "
        "path), or a catalog name whose tokenizer archive to use",
    )
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
    c = msub.add_parser(
        "catalog",
        help="list the models `models pull` knows by name, and which fit this box's TPU memory now",
    )
    c.add_argument("--config", type=Path, metavar="PATH", help="config file (for provisioning settings)")
    c.add_argument("--sysroot", metavar="DIR", help="root of the board's system paths (provisioning.sysroot)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=run_catalog)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, inspect and install models", description=__doc__)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    ls = msub.add_parser("list", help="list installed models", description="List installed models.")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_list)
    info = msub.add_parser(
        "info",
        help="show a model or a .bmodel file",
        description="Show an installed model's manifest, or the nets, shapes and memory of a .bmodel file.",
    )
    info.add_argument("model", help="model name, model directory or .bmodel file")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=run_info)
    _register_install_commands(msub)
    register_compile_command(msub)
    p.set_defaults(func=lambda args: p.print_help() or 2)
