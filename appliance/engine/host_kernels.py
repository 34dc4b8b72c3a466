"""The host engine's compiled decode step (host_step.cpp): built once per machine, loaded in milliseconds.

A decode step of a small model on the CPU costs more in per-op overhead than in its weight kernels
(host_step.cpp says how much). The compiled step runs the same arithmetic as one call into torch's
own library: it calls torch's quantized kernels from C++ and needs nothing but torch's headers (in
every torch wheel) and a C++ compiler (g++, or $CXX).

- Built on first use in a background thread (about 10 to 15 s on 2 cores), so a start is never
  slower: the engine decodes op by op until the library is there, then switches between two tokens.
- Cached under the user's cache directory, keyed on the source, torch's version, the compiler flags
  and this CPU's model and flags (the build targets this CPU: ``-march=native``); the library is
  written under a temporary name and renamed, so concurrent builds cannot leave a torn file.
- Without a compiler, or when a build fails, the engine keeps the op-by-op step (same results, lower
  speed) and :attr:`CompiledStep.status` says why; the build log stays next to the cache entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SOURCE", "CompiledStep", "compiled_step"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("host_step.cpp")
LIBRARY = "host_step.so"
# -ffp-contract=off: a*b + c*d rounds each product, as torch's separate ops do (no fused multiply-add).
# -fopenmp: at::parallel_for is inline OpenMP (without the flag it runs on one thread); the library
# then shares the OpenMP runtime torch has loaded (the soname libgomp.so.1) and its thread count.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-std=c++20", "-shared", "-fPIC", "-w")
BUILD_TIMEOUT_S = 600


def _cpu_identity() -> str:
    """This CPU's model name and flags (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
    return "\n".join(sorted(set(keep)))


def _compiler() -> str | None:
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx)
    return next((p for p in map(shutil.which, ("g++", "c++", "clang++")) if p), None)


def _build_key(torch: Any) -> str:
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), torch.__version__.encode(), " ".join(FLAGS).encode()):
        digest.update(part)
    digest.update(f"{platform.machine()}|{_cpu_identity()}".encode())
    return digest.hexdigest()[:16]


class CompiledStep:
    """The compiled decode step for one cache directory: loaded if cached, else built in the background."""

    def __init__(self, cache_root: Path) -> None:
        import torch

        self._torch = torch
        self._op: Callable[..., Any] | None = None
        self._status = "building"
        self._done = threading.Event()
        try:
            self._dir = cache_root / _build_key(torch)
        except OSError as exc:  # an installation without host_step.cpp
            self._dir = cache_root
            self._finish(None, f"unavailable: cannot read {SOURCE.name} ({exc.strerror})")
            return
        if not ((self._dir / LIBRARY).is_file() and self._load(cached=True)):
            threading.Thread(target=self._build, name="host-step-build", daemon=True).start()

    @property
    def status(self) -> str:
        """compiled, building, or why the op-by-op step is in use."""
        return self._status

    def get(self) -> Callable[..., Any] | None:
        """The op if it is ready (never waits)."""
        return self._op

    def wait(self, timeout: float | None = None) -> Callable[..., Any] | None:
        """The op once the build ends (None if it is unavailable or still building after ``timeout``)."""
        self._done.wait(timeout)
        return self._op

    def _finish(self, op: Callable[..., Any] | None, status: str) -> None:
        self._op, self._status = op, status
        self._done.set()

    def _load(self, cached: bool) -> bool:
        """Load the library (a cached one that does not load is removed, to be built again)."""
        library = self._dir / LIBRARY
        try:
            with _load_lock:  # a process registers the op once, whichever library it loads
                if not hasattr(self._torch.ops.llm_tpu, "decode_step"):
                    self._torch.ops.load_library(str(library))
            op = self._torch.ops.llm_tpu.decode_step
        except (OSError, RuntimeError, AttributeError) as exc:
            if cached:
                log.warning(
                    "host engine: the cached decode step %s does not load (%s); building it again",
                    library,
                    exc,
                )
                library.unlink(missing_ok=True)
                return False
            log.warning("host engine: the decode step just built does not load (%s); decoding op by op", exc)
            self._finish(None, f"unavailable: the compiled library does not load ({exc})")
            return False
        self._finish(op, "compiled")
        return True

    def _build(self) -> None:
        compiler = _compiler()
        if compiler is None:
            log.info("host engine: no C++ compiler (g++) to build the fast decode step; decoding op by op")
            self._finish(None, "unavailable: no C++ compiler (install g++, or set CXX)")
            return
        torch_dir = Path(self._torch.__file__).parent
        abi = int(self._torch.compiled_with_cxx11_abi())
        partial = self._dir / f".{LIBRARY}.{os.getpid()}.{threading.get_ident()}"
        # at a low priority: the engine is answering (op by op) while this builds
        nice = shutil.which("nice")
        command = [
            *([nice, "-n", "10"] if nice else []),
            compiler,
            *FLAGS,
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            f"-I{torch_dir / 'include'}",
            f"-I{torch_dir / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
            str(SOURCE),
            "-o",
            str(partial),
            f"-L{torch_dir / 'lib'}",
            "-ltorch_cpu",
            "-lc10",
        ]
        log_path = self._dir / "build.log"
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            _remove_stale_partials(self._dir)
            with open(log_path, "w") as out:
                out.write(" ".join(command) + "\n")
                out.flush()
                rc = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S)
            if rc != 0:
                raise OSError(f"{Path(compiler).name} exited with {rc}")
            os.replace(partial, self._dir / LIBRARY)
        except (OSError, subprocess.SubprocessError) as exc:
            partial.unlink(missing_ok=True)
            log.warning(
                "host engine: building the fast decode step failed (%s; see %s); decoding op by op",
                exc,
                log_path,
            )
            self._finish(None, f"unavailable: the build failed ({exc}; see {log_path})")
            return
        self._load(cached=False)


def _remove_stale_partials(directory: Path) -> None:
    """Libraries a build left half written (its process exited first, e.g. ``llm-tpu ask --local``)."""
    now = time.time()
    for partial in directory.glob(f".{LIBRARY}.*"):
        with contextlib.suppress(OSError):
            if now - partial.stat().st_mtime > BUILD_TIMEOUT_S:
                partial.unlink()


_load_lock = threading.Lock()
_steps: dict[Path, CompiledStep] = {}
_steps_lock = threading.Lock()


def compiled_step(cache_root: Path) -> CompiledStep:
    """The process's compiled step for ``cache_root`` (one build per process and directory)."""
    with _steps_lock:
        step = _steps.get(cache_root)
        if step is None:
            step = _steps[cache_root] = CompiledStep(cache_root)
        return step
