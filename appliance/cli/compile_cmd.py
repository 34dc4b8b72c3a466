"""`llm-tpu models compile SRC`: a Hugging Face model directory (or a GGUF) to a BM1684X bmodel,
installed into the model store with its tokenizer and a manifest."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from appliance import __version__, paths
from appliance.compile.driver import CompileResult, Progress, compile_bmodel
from appliance.compile.plan import LM_HEAD_QUANTS, QUANTS, BuildOptions
from appliance.compile.sources import resolve_source
from appliance.compile.toolchain import TPU_MLIR_VERSION
from appliance.models.directory import has_tokenizer
from appliance.models.manifest import FAMILIES, ModelManifest
from appliance.models.names import MODEL_NAME_HELP, check_model_name, derive_model_name
from provisioning.install import install_files

__all__ = ["register_compile_command"]


def _default_name(src: Path, opts: BuildOptions) -> str:
    base = src.name.lower().replace("_", "-")
    lm_head = f"-lmhead-{opts.lm_head}" if opts.lm_head_quantized else ""
    return derive_model_name(f"{base}-{opts.quant}{lm_head}-seq{opts.seq}{'-sample' if opts.sample else ''}")


def _print_progress(p: Progress) -> None:
    if p.skipped:
        print(f"[{p.done}/{p.total}] {p.net}: done in an earlier run", file=sys.stderr)
        return
    left = f", about {p.remaining:.0f} s left" if p.remaining is not None else ""
    print(
        f"[{p.done}/{p.total}] {p.net}: {p.net_seconds:.1f} s (elapsed {p.elapsed:.0f} s{left})",
        file=sys.stderr,
    )


def _manifest(result: CompileResult, name: str, source: str) -> ModelManifest:
    s, o = result.spec, result.options
    return ModelManifest(
        name=name,
        family=s.family if s.family in FAMILIES else "other",  # qwen3: no manifest family yet
        engine="auto",
        files=(),
        template="tokenizer",
        max_seq_len=o.seq,
        quantization=o.quant,
        source=source,
        extra={
            "compiled": {
                "source_sha256": result.source_sha256,
                "options": {"quant": o.quant, "seq": o.seq, "sample": o.sample, "lm_head": o.lm_head},
                "tools": {"tpu-mlir": TPU_MLIR_VERSION, "llm-tpu-appliance": __version__},
                "seconds": round(result.seconds, 1),
            }
        },
    )


def run_compile(args: argparse.Namespace) -> int:
    out = Path(args.output).expanduser().resolve() if args.output else None
    if args.name is not None:
        check_model_name(args.name)  # before hours of compiling
    if out is not None:
        check_model_name(out.name)
    src, source = resolve_source(args.src)
    opts = BuildOptions(quant=args.quant, seq=args.seq, sample=args.sample, lm_head=args.lm_head)
    name = args.name or (out.name if out else _default_name(src, opts))
    if not has_tokenizer(src):
        print(
            f"warning: {src} has no tokenizer files; the model compiles but cannot be served until one is added",
            file=sys.stderr,
        )
    work = Path(args.work_dir) if args.work_dir else paths.cache_dir() / "compile"
    bmodel = work / f"{name}.bmodel"
    result = compile_bmodel(
        src, opts, work, bmodel, jobs=args.jobs, progress=None if args.json else _print_progress
    )
    try:
        root = out.parent if out else None
        if out:
            name = out.name
        path = install_files(
            name,
            [bmodel],
            base=_manifest(result, name, source),
            source=source,
            move=True,
            tokenizer_dirs=[src] if has_tokenizer(src) else [],
            root=root,
        )
    finally:
        bmodel.unlink(missing_ok=True)
    record = {
        "name": name,
        "path": str(path),
        "seconds": round(result.seconds, 1),
        "nets_compiled": result.nets_compiled,
        "nets_skipped": result.nets_skipped,
        "peak_scratch_bytes": result.peak_scratch_bytes,
        "size": sum(f.stat().st_size for f in path.rglob("*.bmodel")),
    }
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"compiled {name} in {result.seconds:.0f} s -> {path}")
    return 0


def register_compile_command(msub: argparse._SubParsersAction) -> None:
    c = msub.add_parser(
        "compile",
        help="compile a Hugging Face model (or GGUF) to a BM1684X bmodel and install it",
        description=__doc__,
    )
    c.add_argument(
        "src", help="Hugging Face model directory (config.json + safetensors), a .gguf file, or 'embedded'"
    )
    c.add_argument(
        "--quant", choices=QUANTS, default="w4bf16", help="bf16, or 4-bit weights with bf16 compute"
    )
    c.add_argument(
        "--seq", type=int, default=512, help="context length (prompt + answer) the bmodel is built for"
    )
    c.add_argument(
        "--lm-head",
        choices=list(LM_HEAD_QUANTS),
        default="bf16",
        help="lm_head weights: bf16 (as the vendor builds it), or int8/int4 per group of 64 with bf16 compute "
        "(fewer bytes read per token; logits slightly less exact)",
    )
    c.add_argument(
        "--sample", action="store_true", help="lm_head gives logits, plus greedy_head and sample_head nets"
    )
    c.add_argument(
        "--name", help=f"install under this name (default: <src>-<quant>-seq<N>); {MODEL_NAME_HELP}"
    )
    c.add_argument("-o", "--output", help="write the model directory here instead of the model store")
    c.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="nets compiled at once (default: the core count)",
    )
    c.add_argument("--work-dir", help="resumable scratch directory (default: the user cache)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=run_compile)
