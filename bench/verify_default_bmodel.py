"""`make verify-default-bmodel`: the TPU default model's build pipeline gives the host engine's answer.

Compiles the embedded SmolLM2-135M-Instruct exactly as `make model-deb` does (the same
`llm-tpu models compile embedded --quant bf16 --sample` command on the same GGUF), but at a short seq
(128 by default), runs one short chat prompt on the BM1684X cmodel, greedy, and compares it with torch
(the host engine on the same weights: the embedded GGUF dequantized to f32): the same tokens at every
step, and the logit cosine per step. The prompt must have no near-tie on torch's greedy path (bf16
logits resolve 0.0625 at magnitudes 8-16); if it has one the check says so instead of guessing.

Why a short seq: the packaged build is fixed-shape, so its prefill runs all 512 positions through the
30 blocks whatever the prompt's length, and on the simulator that did not finish in 39 minutes
(seq 128: 22 CPU-minutes in all, 46 min wall on this 2-core machine shared at load 12; 9 tokens
equal torch's, worst logit cosine 0.9912). The seq changes only shapes (the rotary table's rows, the
mask, the KV cache, the attention kernel's size); weights, generator code, tpuc-opt passes, quantization and the
nets' layout are the same. The build is cached outside the clone, keyed on the compiler's code, the
tpu-mlir version, the GGUF and the seq. ``--packaged`` runs the seq-512 bf16 build out of the
llm-tpu-model-smollm2-135m package in dist/ (`make verify-default-bmodel-packaged`) for whoever has
hours.

Slow by nature: not part of `make test`. The host takes the argmax of lm_head's logits (greedy_head
on the cmodel costs about 10 s a token for the same answer). Prints the times of each part.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from appliance.compile.toolchain import TPU_MLIR_VERSION
from appliance.engine.bmrt.engine import BmrtEngine
from appliance.engine.host import HostEngine
from appliance.generation.templates import make_template
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import Message
from appliance.models import embedded
from appliance.models.manifest import InstalledModel, read_manifest
from appliance.models.tpu_default import PACKAGE, TPU_DEFAULT

REPO = Path(__file__).resolve().parents[1]
# Chosen among ten short questions for the widest top-1/top-2 gap on torch's path (0.54; "What is the
# capital of France?" ties at 0.08 on its first token under SmolLM2's default system prompt).
PROMPT = "How many days are in a week?"
MIN_GAP = 0.25  # four bf16 steps at logit magnitudes 8-16
# 38 prompt tokens (with SmolLM2's system prompt) + torch's 9-token answer fit with room for a
# longer --prompt; the prefill is 4x shorter than the package's 512.
SEQ = 128


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def build_cache() -> Path:
    """Where compiled builds are kept between runs (outside the clone, as `make model-deb`'s)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-tpu-build"
    return Path(os.environ.get("LLM_TPU_BUILD_CACHE") or default) / "verify-default"


def short_build(seq: int) -> InstalledModel:
    """The embedded model compiled by `make model-deb`'s command, bf16 --sample, at ``seq`` (cached)."""
    h = hashlib.sha256()
    for f in sorted((REPO / "appliance" / "compile").glob("*.py")):
        h.update(f.read_bytes())
    h.update(f"{TPU_MLIR_VERSION} {embedded.gguf_path().stat().st_size} seq{seq}".encode())
    with open(embedded.gguf_path(), "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    name = f"{embedded.NAME}-bf16-seq{seq}"
    cache = build_cache() / h.hexdigest()[:16]
    d = cache / name
    if (d / "manifest.json").is_file():
        print(f"compiled build cached: {d}", flush=True)
    else:
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "appliance.cli.main", "models", "compile", "embedded"]
        cmd += [
            "--quant",
            "bf16",
            "--seq",
            str(seq),
            "--sample",
            "-o",
            str(d),
            "--work-dir",
            str(cache / "work"),
        ]
        subprocess.run(cmd, check=True)
        print(f"compiled {name} in {time.monotonic() - t0:.0f} s", flush=True)
    return InstalledModel(d, read_manifest(d))


@contextlib.contextmanager
def packaged_build(deb: Path) -> Iterator[InstalledModel]:
    """The bf16 build inside the package (seq 512), unpacked into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="verify-default-") as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        d = Path(tmp) / "usr" / "share" / "llm-tpu" / "models" / TPU_DEFAULT
        yield InstalledModel(d, read_manifest(d))


def newest_package() -> Path | None:
    debs = sorted((REPO / "dist").glob(f"{PACKAGE}_*_all.deb"), key=lambda p: p.stat().st_mtime)
    return debs[-1] if debs else None


def torch_greedy(
    model_dir: Path, ids: list[int], n: int, stop: frozenset[int]
) -> tuple[list[int], list[np.ndarray]]:
    """Up to ``n`` greedy tokens (ending at a stop id) and the logits each was chosen from."""
    host = HostEngine(model_dir)
    out = host.prefill(ids)
    tokens: list[int] = []
    logits: list[np.ndarray] = []
    for _ in range(n):
        assert out.logits is not None
        logits.append(out.logits)
        tokens.append(int(np.argmax(out.logits)))
        if tokens[-1] in stop:
            break
        out = host.decode(tokens[-1])
    host.close()
    return tokens, logits


def cmodel_greedy(
    model: InstalledModel, libdir: str, ids: list[int], want: list[int], ref_logits: list[np.ndarray]
) -> tuple[list[int], list[float], dict[str, float]]:
    """The build's greedy tokens on the cmodel, step by step until the first difference from
    ``want``, with the logit cosine against torch's at each step, and the times of each part."""
    print(
        f"loading {model.name} on the cmodel (seq {model.manifest.max_seq_len}: the prefill runs all "
        f"{model.manifest.max_seq_len} positions through every block)",
        flush=True,
    )
    t0 = time.monotonic()
    eng = BmrtEngine.open(model.weights_path, libdir=libdir, allow_cmodel=True)
    eng.greedy_on_device = False
    times = {"load": time.monotonic() - t0}
    got: list[int] = []
    cos: list[float] = []
    try:
        t0 = time.monotonic()
        out = eng.prefill(ids)
        times["prefill"] = time.monotonic() - t0
        print(f"cmodel prefill: {times['prefill']:.0f} s", flush=True)
        t0 = time.monotonic()
        for step in range(len(want)):
            assert out.logits is not None
            cos.append(_cosine(out.logits, ref_logits[step]))
            got.append(int(np.argmax(out.logits)))
            print(f"step {step}: {got[-1]} (torch {want[step]}), cosine {cos[-1]:.5f}", flush=True)
            if got[-1] != want[step] or step == len(want) - 1:
                break
            out = eng.decode(got[-1])
        times["decode"] = (time.monotonic() - t0) / max(1, len(got) - 1)
    finally:
        eng.close()
    return got, cos, times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify_default_bmodel", description=__doc__)
    parser.add_argument("--seq", type=int, default=SEQ, help=f"seq of the short build ({SEQ})")
    parser.add_argument(
        "--packaged",
        nargs="?",
        type=Path,
        const=Path(),
        metavar="DEB",
        help=f"run the packaged seq-512 build instead (hours), from DEB or the newest {PACKAGE} in dist/",
    )
    parser.add_argument("--tokens", type=int, default=16, help="greedy tokens to compare at most (16)")
    parser.add_argument("--prompt", default=PROMPT, help=f"user message ({PROMPT!r})")
    args = parser.parse_args(argv)
    deb = None
    if args.packaged is not None:
        deb = args.packaged if args.packaged != Path() else newest_package()
        if deb is None or not deb.is_file():
            print(f"no {PACKAGE} package: run `make model-deb` first", file=sys.stderr)
            return 2
    libdir = os.environ.get("LLM_TPU_BMRT_LIBDIR") or str(
        REPO / ".cache" / "vendor" / "tpu-mlir-1.30.2" / "lib"
    )
    t_all = time.monotonic()
    host_model = embedded.ensure_embedded_model()
    tok = ChatTokenizer.from_dir(host_model.tokenizer_dir)
    template = make_template("tokenizer", tok)
    ids = template.render([Message("user", args.prompt)])
    if deb is None and len(ids) + args.tokens > args.seq:
        print(f"{len(ids)} prompt tokens + {args.tokens} do not fit in --seq {args.seq}", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    want, ref_logits = torch_greedy(host_model.path, ids, args.tokens, template.stop_ids)
    t_torch = time.monotonic() - t0
    gaps = [float(np.diff(np.sort(lg)[-2:])[0]) for lg in ref_logits]
    print(f"prompt: {args.prompt!r} ({len(ids)} tokens); torch: {tok.decode(want)!r} in {t_torch:.1f} s")
    print(f"torch top-1/top-2 gaps per step: {' '.join(f'{g:.2f}' for g in gaps)}", flush=True)
    if min(gaps) < MIN_GAP:
        step = int(np.argmin(gaps))
        print(
            f"near-tie at step {step} (gap {gaps[step]:.3f} < {MIN_GAP}): choose another --prompt",
            file=sys.stderr,
        )
        return 2

    with contextlib.ExitStack() as stack:
        model = stack.enter_context(packaged_build(deb)) if deb else short_build(args.seq)
        got, cos, times = cmodel_greedy(model, libdir, ids, want, ref_logits)
    where = f"from {deb.name}" if deb else "compiled by make model-deb's command"
    print(f"cmodel ({model.name}, {where}): {tok.decode(got)!r}")
    print(f"logit cosine per step: {' '.join(f'{c:.5f}' for c in cos)}; worst {min(cos):.5f}")
    print(
        f"times: torch {t_torch:.1f} s, bmodel load {times['load']:.1f} s, cmodel prefill "
        f"{times['prefill']:.0f} s, decode {times['decode']:.0f} s/token, total {time.monotonic() - t_all:.0f} s"
    )
    if got != want:
        print(f"MISMATCH: cmodel {got} vs torch {want}", file=sys.stderr)
        return 1
    print(f"OK: {len(got)} greedy tokens equal torch's")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
