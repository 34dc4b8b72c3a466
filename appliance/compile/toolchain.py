"""The compiler binaries from the tpu-mlir wheel (tpuc-opt, model_tool, the PPL JIT toolchain): where
they are, the clean environment they need, the prerequisites they use, and the tpuc-opt command lines
model_deploy.py would run for one net (compile-facts.md, "tpuc-opt pipeline per net").
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from appliance.compile.plan import NetJob
from appliance.errors import CompileError

__all__ = [
    "TPU_MLIR_VERSION",
    "CompilerMissing",
    "Toolchain",
    "find_toolchain",
    "net_commands",
]

TPU_MLIR_VERSION = "1.30.2"
# cmake, make and gcc: the PPL JIT builds one FAttention kernel per shape with them.
HOST_TOOLS = {"cmake": "cmake", "make": "make", "gcc": "gcc", "g++": "g++"}


class CompilerMissing(CompileError):
    """Something the compiler needs is not installed."""


@dataclass(frozen=True)
class Toolchain:
    root: Path  # the extracted tpu_mlir/ tree (bin/, lib/, cross_toolchains/)
    ppl_cache: Path  # where the PPL JIT keeps its kernels between builds

    @property
    def tpuc_opt(self) -> Path:
        return self.root / "bin" / "tpuc-opt"

    @property
    def model_tool(self) -> Path:
        return self.root / "bin" / "model_tool"

    def env(self, scratch: Path) -> dict[str, str]:
        """A clean environment: nothing of the caller's PATH/LD_LIBRARY_PATH leaks in."""
        ppl = self.root / "cross_toolchains" / "ppl_compile"
        lib = self.root / "lib"
        return {
            "PATH": f"{self.root / 'bin'}:{ppl / 'bin'}:/usr/bin:/bin",
            "LD_LIBRARY_PATH": f"{lib}:{lib / 'capi'}:{lib / 'third_party'}",
            "TPUC_ROOT": str(self.root),
            "PPL_PROJECT_ROOT": str(ppl),
            "PPL_RUNTIME_PATH": str(ppl / "deps"),
            "PPL_BUILD_PATH": str(scratch / "ppl-build"),
            "PPL_CACHE_PATH": str(self.ppl_cache),
            "HOME": str(scratch),
            "LANG": "C.UTF-8",
        }


def _default_vendor_dir() -> Path:
    env = os.environ.get("LLM_TPU_VENDOR_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".cache" / "vendor"


def _default_ppl_cache() -> Path:
    env = os.environ.get("LLM_TPU_PPL_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llm-tpu-build" / f"ppl-cache-tpu-mlir-{TPU_MLIR_VERSION}"


def find_toolchain(root: Path | None = None) -> Toolchain:
    """The toolchain, or CompilerMissing naming what is missing and the command that installs it."""
    if root is None:
        env = os.environ.get("LLM_TPU_COMPILER_DIR")
        root = Path(env) if env else _default_vendor_dir() / f"tpu-mlir-compiler-{TPU_MLIR_VERSION}"
    needed = [
        root / "bin" / "tpuc-opt",
        root / "bin" / "model_tool",
        root / "cross_toolchains" / "ppl_compile" / "bin" / "ppl_jit.sh",
    ]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise CompilerMissing(
            f"the tpu-mlir {TPU_MLIR_VERSION} compiler is not installed ({missing[0]} is missing)",
            hint="make compiler (scripts/fetch-vendor-compiler.sh), or set LLM_TPU_COMPILER_DIR",
        )
    absent = [tool for tool in HOST_TOOLS if shutil.which(tool, path="/usr/bin:/bin") is None]
    if absent:
        raise CompilerMissing(
            f"the PPL kernel JIT needs {', '.join(absent)}, which are not installed",
            hint="apt-get install cmake make gcc g++",
        )
    return Toolchain(root=root, ppl_cache=_default_ppl_cache())


def _b(v: bool) -> str:
    return "True" if v else "False"


def net_commands(job: NetJob) -> list[list[str]]:
    """tpuc-opt's three runs for one net (lower, optimise + assign, codegen), run in the net's dir."""
    p = job.prefix
    lower = [
        "tpuc-opt",
        f"{job.name}.mlir",
        f"--processor-assign=chip=bm1684x mode={job.mode} num_device=1 num_core=1 addr_mode={job.addr_mode} high_precision=True",
        "--processor-top-optimize",
        f"--convert-top-to-tpu=weightFileName={p}_tpu_weights.npz asymmetric=False doWinograd=False"
        f" q_group_size={job.q_group_size} q_symmetric=False matmul_perchannel=False gelu_mode=normal",
        "--canonicalize",
        "--weight-fold",
        "-o",
        f"{p}_tpu.mlir",
    ]
    optimise = [
        "tpuc-opt",
        f"{p}_tpu.mlir",
        "--mlir-disable-threading",
        f"--strip-io-quant=quant_input={_b(job.quant_input)} quant_output={_b(job.quant_output)}"
        " quant_input_list= quant_output_list= quant_output_bf16=False quant_input_int8=False quant_output_int8=False ",
        "--processor-tpu-optimize",
        "--dev-parallel",
        "--weight-reorder",
        f"--subnet-divide=dynamic={_b(job.dynamic)}",
        "--op-reorder",
        "--topo-sort",
        "--layer-group=opt=2 group_by_cores=auto compress_mode=none debugger=0 disable_group_overlap=false"
        " lgcache=true config_filename= enable_lghash=False lghash_dir=",
        "--affine-opt",
        "--core-parallel",
        "--after-layergroup-weight-reorder",
        "--address-assign",
        "-o",
        f"{p}_final.mlir",
        "--debug_cmd=",
    ]
    codegen = [
        "tpuc-opt",
        f"{p}_final.mlir",
        f"--codegen=model_file={job.name}.bmodel embed_debug_info=False model_version=latest"
        " bmodel_only=False gdma_check=False rvti=False",
        "-o",
        "/dev/null",
    ]
    return [lower, optimise, codegen]
