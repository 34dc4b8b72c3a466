"""`llm-tpu models list|info|pull|import|rm|catalog`: list, inspect and install models.

The one home of the models subcommands; the work is done by appliance.models (store, manifests) and
provisioning.install (downloads, atomic installs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from appliance.bmodel.report import print_bmodel_info
from appliance.cli.compile_cmd import register_compile_command
from appliance.models import embedded
from appliance.models.manifest import read_manifest
from appliance.models.names import MODEL_NAME_HELP
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


def run_list(args: argparse.Namespace) -> int:
    store = ModelStore()
    models, problems = store.installed()
    rows = [
        {
            "name": m.name,
            "family": m.manifest.family,
            "engine": m.manifest.engine,
            "quantization": m.manifest.quantization,
            "max_seq_len": m.manifest.max_seq_len,
            "size": sum(f.size for f in m.manifest.files),
            "path": str(m.path),
        }
        for m in models
    ]
    try:
        embedded_available = embedded.gguf_path().is_file()
    except Exception:
        embedded_available = False
    if args.json:
        print(json.dumps({"models": rows, "embedded": embedded_available, "problems": problems}, indent=2))
        return 0
    if rows:
        print(f"{'NAME':<28} {'FAMILY':<11} {'ENGINE':<6} {'QUANT':<14} {'SEQ':>6} {'SIZE':>10}")
        for r, m in zip(rows, models, strict=True):
            print(
                f"{r['name']:<28} {r['family']:<11} {r['engine']:<6} {str(r['quantization'])[:14]:<14} "
                f"{r['max_seq_len']:>6} {_human(float(sum(f.size for f in m.manifest.files))):>10}"
            )
    else:
        print("no models installed in " + ", ".join(str(r) for r in store.roots))
    if embedded_available:
        print(f"embedded default: {embedded.NAME} (used when no --model is given)")
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
    p.add_argument("--name", help=f"install under this name; {MODEL_NAME_HELP}")
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
    i.add_argument("--name", help=f"install under this name; {MODEL_NAME_HELP}")
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
