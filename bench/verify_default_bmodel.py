"""`make verify-default-bmodel`: the TPU default model, as packaged, gives the host engine's answer.

Takes the bf16 build out of the llm-tpu-model-smollm2-135m package in dist/ (what `make model-deb`
built), runs one short chat prompt on the BM1684X cmodel, greedy, and compares it with torch (the
host engine on the same weights: the embedded GGUF dequantized to f32): the same tokens at every
step, and the logit cosine per step. The prompt must have no near-tie on torch's greedy path (bf16
logits resolve 0.0625 at magnitudes 8-16); if it has one the check says so instead of guessing.

Slow by nature (the simulator runs the seq-512 prefill on the CPU): not part of `make test`. The host
takes the argmax of lm_head's logits (greedy_head on the cmodel costs about 10 s a token for the same
answer). Prints the times of each part.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def packaged_model(deb: Path, dest: Path) -> InstalledModel:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    d = dest / "usr" / "share" / "llm-tpu" / "models" / TPU_DEFAULT
    return InstalledModel(d, read_manifest(d))


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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify_default_bmodel", description=__doc__)
    parser.add_argument("--deb", type=Path, help=f"the {PACKAGE} package (default: the newest in dist/)")
    parser.add_argument("--tokens", type=int, default=16, help="greedy tokens to compare at most (16)")
    parser.add_argument("--prompt", default=PROMPT, help=f"user message ({PROMPT!r})")
    args = parser.parse_args(argv)
    debs = sorted((REPO / "dist").glob(f"{PACKAGE}_*_all.deb"), key=lambda p: p.stat().st_mtime)
    deb = args.deb or (debs[-1] if debs else None)
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

    with tempfile.TemporaryDirectory(prefix="verify-default-") as tmp:
        model = packaged_model(deb, Path(tmp))
        print(
            f"loading {model.name} on the cmodel; the seq-{model.manifest.max_seq_len} prefill takes long",
            flush=True,
        )
        t0 = time.monotonic()
        eng = BmrtEngine.open(model.weights_path, libdir=libdir, allow_cmodel=True)
        eng.greedy_on_device = False
        t_load = time.monotonic() - t0
        try:
            got, cos = [], []
            t0 = time.monotonic()
            out = eng.prefill(ids)
            t_prefill = time.monotonic() - t0
            print(f"cmodel prefill: {t_prefill:.0f} s", flush=True)
            t0 = time.monotonic()
            for step in range(len(want)):
                assert out.logits is not None
                cos.append(_cosine(out.logits, ref_logits[step]))
                got.append(int(np.argmax(out.logits)))
                print(f"step {step}: {got[-1]} (torch {want[step]}), cosine {cos[-1]:.5f}", flush=True)
                if got[-1] != want[step] or step == len(want) - 1:
                    break
                out = eng.decode(got[-1])
            t_decode = time.monotonic() - t0
        finally:
            eng.close()
    steps = max(1, len(got) - 1)
    print(f"cmodel ({model.name} from {deb.name}): {tok.decode(got)!r}")
    print(f"logit cosine per step: {' '.join(f'{c:.5f}' for c in cos)}")
    print(
        f"times: torch {t_torch:.1f} s, bmodel load {t_load:.1f} s, cmodel prefill {t_prefill:.0f} s, "
        f"decode {t_decode / steps:.0f} s/token, total {time.monotonic() - t_all:.0f} s"
    )
    if got != want:
        print(f"MISMATCH: cmodel {got} vs torch {want}", file=sys.stderr)
        return 1
    print(f"OK: {len(got)} greedy tokens equal torch's")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
