"""Compile a Hugging Face model directory to a BM1684X bmodel: check, prepare, run the nets in
parallel (tpuc-opt, one process chain per net), combine with model_tool.

Prerequisites, the model's config and the free disk space are checked before any work. The work
directory is resumable (finished nets are skipped); on Ctrl-C the running tools are stopped and the
output is not touched, because the result is only renamed into place when it is complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from appliance.compile.plan import LM_HEAD_QUANTS, QUANTS, BuildOptions, NetJob, plan_nets
from appliance.compile.source import Checkpoint, ModelSpec, read_spec
from appliance.compile.toolchain import TPU_MLIR_VERSION, Toolchain, find_toolchain, net_commands
from appliance.compile.workdir import WorkDir
from appliance.errors import CompileError, InvalidRequest

__all__ = ["CompileResult", "Progress", "compile_bmodel", "source_checksum"]

GENERATOR_VERSION = 1  # bump when the emitted MLIR changes: old work dirs are then rebuilt
MIN_SEQ, MAX_SEQ = 16, 32768


@dataclass(frozen=True)
class Progress:
    """One finished net: ``done`` of ``total`` (skipped nets count as done), times in seconds."""

    net: str
    done: int
    total: int
    net_seconds: float
    elapsed: float
    remaining: float | None  # estimate; None until a net has been timed
    skipped: bool = False


@dataclass(frozen=True)
class CompileResult:
    bmodel: Path
    spec: ModelSpec
    options: BuildOptions
    seconds: float
    nets_compiled: int
    nets_skipped: int
    peak_scratch_bytes: int
    source_sha256: str
    timings: dict[str, float] = field(default_factory=dict)


def source_checksum(src: Path) -> str:
    """sha256 over config.json and the safetensors (name, then bytes), in name order."""
    h = hashlib.sha256()
    for p in [src / "config.json", *sorted(src.glob("*.safetensors"))]:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def estimate_scratch_bytes(spec: ModelSpec, opts: BuildOptions) -> int:
    """About 5x the float32 weights: the npz (f32), tpuc-opt's weight files and the per-net bmodels
    (measured: SmolLM2-135M bf16 about 2.7 GB with nothing deleted)."""
    per_layer = (
        4 * spec.hidden * (spec.q_dim + 2 * spec.kv_dim)
        + spec.q_dim * spec.hidden
        + 3 * spec.hidden * spec.intermediate
    )
    params = spec.num_layers * per_layer + spec.vocab * spec.hidden * (1 if spec.tied else 2)
    return 5 * 4 * params + 64 * opts.seq * opts.seq


def _check_options(opts: BuildOptions) -> None:
    if opts.quant not in QUANTS:
        raise InvalidRequest(f"--quant {opts.quant!r} is not one of {', '.join(QUANTS)}")
    if opts.lm_head not in LM_HEAD_QUANTS:
        raise InvalidRequest(f"--lm-head {opts.lm_head!r} is not one of {', '.join(LM_HEAD_QUANTS)}")
    if not MIN_SEQ <= opts.seq <= MAX_SEQ:
        raise InvalidRequest(f"--seq {opts.seq} is outside {MIN_SEQ}..{MAX_SEQ}")


def _check_tensors(ckpt: Checkpoint, spec: ModelSpec) -> None:
    """Every tensor the nets read exists with the shape the config implies (before any compiling)."""
    want: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (spec.vocab, spec.hidden),
        "model.norm.weight": (spec.hidden,),
    }
    if not spec.tied:
        want["lm_head.weight"] = (spec.vocab, spec.hidden)
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        want |= {
            p + "input_layernorm.weight": (spec.hidden,),
            p + "post_attention_layernorm.weight": (spec.hidden,),
            p + "self_attn.q_proj.weight": (spec.q_dim, spec.hidden),
            p + "self_attn.k_proj.weight": (spec.kv_dim, spec.hidden),
            p + "self_attn.v_proj.weight": (spec.kv_dim, spec.hidden),
            p + "self_attn.o_proj.weight": (spec.hidden, spec.q_dim),
            p + "mlp.gate_proj.weight": (spec.intermediate, spec.hidden),
            p + "mlp.up_proj.weight": (spec.intermediate, spec.hidden),
            p + "mlp.down_proj.weight": (spec.hidden, spec.intermediate),
        }
        if spec.qk_norm:
            want |= {
                p + "self_attn.q_norm.weight": (spec.head_dim,),
                p + "self_attn.k_norm.weight": (spec.head_dim,),
            }
    for name, shape in want.items():
        if name not in ckpt:
            raise CompileError(f"{ckpt.src}: the checkpoint has no tensor {name}")
        if ckpt.shape(name) != shape:
            raise CompileError(
                f"{ckpt.src}: tensor {name} has shape {ckpt.shape(name)}, config.json implies {shape}"
            )


class _Runner:
    """Runs net jobs on a thread pool; remembers live processes so an interrupt can stop them."""

    def __init__(self, tc: Toolchain, work: WorkDir) -> None:
        self.tc, self.work = tc, work
        self.env = tc.env(work.root)
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.peak_scratch = work.scratch_bytes()

    def run(self, job: NetJob) -> float:
        start = time.monotonic()
        d = self.work.net_dir(job.name)
        log_path = d / "compile.log"
        with open(log_path, "wb") as log:
            for cmd in net_commands(job):
                if self._stopping.is_set():
                    raise CompileError("stopped")
                exe = str(self.tc.root / "bin" / cmd[0])
                proc = subprocess.Popen(
                    [exe, *cmd[1:]],
                    cwd=d,
                    env={**self.env, "PWD": str(d)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                with self._lock:
                    self._procs.add(proc)
                try:
                    rc = proc.wait()
                finally:
                    with self._lock:
                        self._procs.discard(proc)
                if rc != 0:
                    if self._stopping.is_set():
                        raise CompileError("stopped")
                    tail = log_path.read_bytes()[-1500:].decode(errors="replace")
                    raise CompileError(
                        f"tpuc-opt failed on net {job.name} (exit {rc}); log: {log_path}\n{tail}",
                        hint="rerun to retry (finished nets are kept); report the log if it fails again",
                    )
        scratch = self.work.scratch_bytes()  # before this net's intermediates go
        with self._lock:
            self.peak_scratch = max(self.peak_scratch, scratch)
        self.work.finish(job.name)
        return time.monotonic() - start

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for p in list(self._procs):
                p.terminate()


def compile_bmodel(
    src: Path,
    opts: BuildOptions,
    work_root: Path,
    out: Path,
    *,
    jobs: int | None = None,
    toolchain: Toolchain | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> CompileResult:
    """Compile ``src`` (HF directory) into ``out`` (a .bmodel path, written by rename when complete)."""
    _check_options(opts)
    tc = toolchain or find_toolchain()
    spec = read_spec(src)
    ckpt = Checkpoint(src)
    _check_tensors(ckpt, spec)
    checksum = source_checksum(src)
    key = hashlib.sha256(f"{checksum} {opts} {TPU_MLIR_VERSION} {GENERATOR_VERSION}".encode()).hexdigest()[
        :16
    ]
    root = work_root / key
    need = estimate_scratch_bytes(spec, opts)
    work_root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work_root).free
    if not (root / "build.json").is_file() and free < need:
        raise CompileError(
            f"not enough disk space for the build in {work_root}: about {need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free",
            hint="free some space, or pass --work-dir on a larger file system",
        )
    plan = plan_nets(spec, opts)
    work = WorkDir(root, spec, opts, plan)
    work.check_identity(
        {
            "source_sha256": checksum,
            "options": repr(opts),
            "tpu_mlir": TPU_MLIR_VERSION,
            "generator": GENERATOR_VERSION,
        }
    )
    start = time.monotonic()
    work.prepare(ckpt)
    todo = [j for j in plan if not work.is_done(j.name)]
    skipped = len(plan) - len(todo)
    if progress:
        for n, j in enumerate((j for j in plan if work.is_done(j.name)), start=1):
            progress(Progress(j.name, n, len(plan), 0.0, 0.0, None, skipped=True))
    runner = _Runner(tc, work)
    timings = _run_all(runner, todo, len(plan), skipped, jobs or os.cpu_count() or 1, start, progress)
    _combine(tc, work, plan, out)
    shutil.rmtree(root, ignore_errors=True)
    return CompileResult(
        out, spec, opts, time.monotonic() - start, len(todo), skipped, runner.peak_scratch, checksum, timings
    )


def _run_all(
    runner: _Runner,
    todo: list[NetJob],
    total: int,
    skipped: int,
    workers: int,
    start: float,
    progress: Callable[[Progress], None] | None,
) -> dict[str, float]:
    timings: dict[str, float] = {}
    done_cost = 0.0
    left_cost = sum(j.cost for j in todo)
    # The most expensive first: the blocks' PPL kernels are JIT-built once per shape and then cached.
    order = sorted(todo, key=lambda j: -j.cost)
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo) or 1)))
    try:
        futures: dict[Future[float], NetJob] = {pool.submit(runner.run, j): j for j in order}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                job = futures[fut]
                seconds = fut.result()  # re-raises a failed net's CompileError
                timings[job.name] = seconds
                done_cost += job.cost
                left_cost -= job.cost
                elapsed = time.monotonic() - start
                rate = elapsed / done_cost if done_cost else None
                if progress:
                    progress(
                        Progress(
                            job.name,
                            skipped + len(timings),
                            total,
                            seconds,
                            elapsed,
                            rate * left_cost if rate else None,
                        )
                    )
    except BaseException:
        runner.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return timings


def _combine(tc: Toolchain, work: WorkDir, plan: list[NetJob], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    cmd = [str(tc.model_tool), "--combine", *[str(work.bmodel(j.name)) for j in plan], "-o", str(tmp)]
    try:
        r = subprocess.run(cmd, env=tc.env(work.root), capture_output=True, text=True)
        if r.returncode != 0 or not tmp.is_file():
            raise CompileError(
                f"model_tool --combine failed (exit {r.returncode}): {(r.stdout + r.stderr)[-1500:]}"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
