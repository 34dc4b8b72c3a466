"""Host engine in each weight mode (none / int8 / int4) side by side with llama.cpp on the same GGUF.

The embedded SmolLM2-135M: our host engine (the fp32 weights converted from the wheel's Q4_1 GGUF,
then quantized per model.host_quant) vs llama.cpp through llama-cpp-python on that GGUF itself. Same
prompt token ids for both, THREADS threads, medians of RUNS: prefill of 150 and 1,000 tokens, decode
tok/s (NEW_TOKENS greedy tokens after the 150-token prompt), time to ready (a fresh process: imports +
load, with the quantized weights already cached by a first untimed start) and peak RSS. Each engine
runs in its own process, one after the other.

llama-cpp-python is not a dependency of the appliance: it is built once from source (pip, several
minutes; 20 on a busy 2-core machine) into LLAMA_CPP_CACHE (default
/var/cache/llm-tpu-build/llama-cpp-python/<version>) and reused; without it the table has no
llama.cpp row. The first build may need `python -m bench bench_host_engine --timeout 2400`.

Run: .venv/bin/python -m bench.bench_host_engine [--modes none,int8,int4] [--no-llama-cpp]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LLAMA_CPP_VERSION = "0.3.36"
THREADS = 2
RUNS = 5
NEW_TOKENS = 64
PROMPTS = (150, 1000)
MODES = ("none", "int8", "int4")


def llama_cpp_cache() -> Path:
    default = f"/var/cache/llm-tpu-build/llama-cpp-python/{LLAMA_CPP_VERSION}"
    return Path(os.environ.get("LLAMA_CPP_CACHE", default))


def ensure_llama_cpp() -> Path | None:
    """The directory to put on PYTHONPATH for llama_cpp (built once from source), or None."""
    root = llama_cpp_cache()
    site = root / "site"
    if (site / "llama_cpp").is_dir():
        return site
    pip = [sys.executable, "-m", "pip"]
    wheels = sorted((root / "wheel").glob("llama_cpp_python-*.whl"))
    if not wheels:
        print(f"building llama-cpp-python {LLAMA_CPP_VERSION} from source into {root} (once) ...", flush=True)
        start = time.perf_counter()
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "build.log", "w") as log:
            rc = subprocess.call(
                [
                    *pip,
                    "wheel",
                    "--no-deps",
                    "--no-binary",
                    "llama-cpp-python",
                    f"llama-cpp-python=={LLAMA_CPP_VERSION}",
                    "-w",
                    str(root / "wheel"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        print(
            f"built in {time.perf_counter() - start:.0f} s (exit {rc}; log {root / 'build.log'})", flush=True
        )
        wheels = sorted((root / "wheel").glob("llama_cpp_python-*.whl"))
        if rc or not wheels:
            return None
    rc = subprocess.call(
        [*pip, "install", "--quiet", "--target", str(site), str(wheels[-1])],  # with diskcache, jinja2
        stdout=subprocess.DEVNULL,
    )
    return site if rc == 0 and (site / "llama_cpp").is_dir() else None


def prompt_ids() -> tuple[str, list[int]]:
    """The GGUF's path and 1,000 prompt token ids (the first 150 are the short prompt)."""
    from appliance.bench_runner import filler_text
    from appliance.generation.tokenizer import ChatTokenizer
    from appliance.models.embedded import ensure_embedded_model, gguf_path

    model = ensure_embedded_model()

    class _Target:
        tokenizer = ChatTokenizer.from_dir(model.tokenizer_dir)

    ids = _Target.tokenizer.encode(filler_text(_Target(), max(PROMPTS) + 20))  # type: ignore[arg-type]
    return str(gguf_path()), list(ids)[: max(PROMPTS)]


# ---- children: one engine each, results as one JSON line on stdout ----


class _Ours:
    def __init__(self, mode: str) -> None:
        from appliance.config.schema import ModelSection
        from appliance.engine.host import HostEngine
        from appliance.models.loader import load_model

        engine = load_model(ModelSection(threads=THREADS, host_quant=mode)).engine  # type: ignore[call-arg]
        assert isinstance(engine, HostEngine)
        self.engine = engine
        # the first (untimed) start builds the compiled decode step; later starts load it at once
        self.decode_step = self.engine.wait_for_compiled_step(600)

    def prefill(self, ids: list[int]) -> int:
        self.engine.truncate(0)
        out = self.engine.prefill(ids)
        assert out.logits is not None
        return int(out.logits.argmax())

    def decode(self, token: int) -> int:
        out = self.engine.decode(token)
        assert out.logits is not None
        return int(out.logits.argmax())


class _LlamaCpp:
    def __init__(self, gguf: str) -> None:
        from llama_cpp import Llama

        self.llm = Llama(gguf, n_ctx=2048, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)

    def _top(self) -> int:
        import numpy as np

        # without logits_all the context holds one row: the last evaluated token's
        row = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))
        return int(np.argmax(row))

    def prefill(self, ids: list[int]) -> int:
        self.llm.reset()
        self.llm.eval(ids)
        return self._top()

    def decode(self, token: int) -> int:
        self.llm.eval([token])
        return self._top()


def child(kind: str, gguf: str, ids: list[int]) -> dict[str, Any]:
    runner: Any = _LlamaCpp(gguf) if kind == "llama.cpp" else _Ours(kind)
    print("READY", flush=True)
    runner.prefill(ids[:8])  # warm-up
    result: dict[str, Any] = {}
    for n in PROMPTS:
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            runner.prefill(ids[:n])
            times.append(time.perf_counter() - start)
        result[f"prefill_{n}"] = statistics.median(times)
    rates, tokens = [], []
    for _ in range(RUNS):
        tok = runner.prefill(ids[: PROMPTS[0]])
        tokens = [tok]
        start = time.perf_counter()
        for _ in range(NEW_TOKENS - 1):
            tok = runner.decode(tok)
            tokens.append(tok)
        rates.append((NEW_TOKENS - 1) / (time.perf_counter() - start))
    result["decode_tps"] = statistics.median(rates)
    result["tokens"] = tokens
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["decode_step"] = getattr(runner, "decode_step", "llama.cpp")
    return result


def run_child(kind: str, gguf: str, ids: list[int], pythonpath: Path | None) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_host_engine", "--child", kind, "--gguf", gguf],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(ids))
    proc.stdin.close()
    ready = None
    result: dict[str, Any] = {}
    for line in proc.stdout:
        if line.startswith("READY") and ready is None:
            ready = time.perf_counter() - start
        elif line.startswith("{"):
            result = json.loads(line)
    if proc.wait() != 0 or not result:
        raise RuntimeError(f"{kind}: the benchmark process failed (exit {proc.returncode})")
    result["ready_s"] = ready
    return result


def agreement(a: list[int], b: list[int]) -> str:
    same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"{same}/{min(len(a), len(b))}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_host_engine", description=__doc__)
    parser.add_argument("--modes", default=",".join(MODES), help="host engine modes (none,int8,int4)")
    parser.add_argument("--no-llama-cpp", action="store_true", help="leave llama.cpp out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.gguf, json.loads(sys.stdin.read()))), flush=True)
        return 0
    gguf, ids = prompt_ids()
    kinds = [m for m in args.modes.split(",") if m]
    site = None if args.no_llama_cpp else ensure_llama_cpp()
    if not args.no_llama_cpp and site is None:
        print("llama-cpp-python is unavailable (build failed): no llama.cpp row")
    rows: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        first = time.perf_counter()
        subprocess.run(  # first start: quantizes and caches the weights (not timed in the table)
            [sys.executable, "-c", f"from bench.bench_host_engine import _Ours; _Ours({kind!r})"],
            check=True,
        )
        print(f"{kind}: first start (quantize + cache) {time.perf_counter() - first:.1f} s", flush=True)
        rows[kind] = run_child(kind, gguf, ids, None)
        print(f"{kind}: {json.dumps(rows[kind])}", flush=True)
    if site is not None:
        try:
            rows["llama.cpp"] = run_child("llama.cpp", gguf, ids, site)
        except RuntimeError as exc:
            print(exc)
    print(
        f"\nSmolLM2-135M-Instruct (Q4_1 GGUF), {THREADS} threads, median of {RUNS}, "
        f"decode = {NEW_TOKENS} greedy tokens after {PROMPTS[0]}"
    )
    ref = rows.get("llama.cpp", {}).get("tokens", [])
    fp32 = rows.get("none", {}).get("tokens", [])
    head = (
        "engine         | prefill 150 (s) | prefill 1000 (s) | decode tok/s | ready (s) | peak RSS (MB) "
        "| same greedy tokens as: fp32 | llama.cpp"
    )
    print(head)
    print("-" * len(head))
    for kind, r in rows.items():
        name = "llama.cpp" if kind == "llama.cpp" else f"host {kind}"
        print(
            f"{name:<14} | {r['prefill_150']:>15.3f} | {r['prefill_1000']:>16.3f} | {r['decode_tps']:>12.1f} "
            f"| {r['ready_s']:>9.2f} | {r['peak_rss_mb']:>13.0f} | {agreement(r['tokens'], fp32):>30} | {agreement(r['tokens'], ref):>9}"
        )
    print("(the embedded model's default, model.host_quant auto, is int4: its weights came from a Q4_1 GGUF)")
    steps = {kind: r["decode_step"] for kind, r in rows.items() if kind != "llama.cpp"}
    print(f"decode steps: {json.dumps(steps)}")
    if "llama.cpp" in rows:
        lc = rows["llama.cpp"]["decode_tps"]
        for kind in kinds:
            print(f"host {kind}: decode {rows[kind]['decode_tps'] / lc:.2f} x llama.cpp")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
