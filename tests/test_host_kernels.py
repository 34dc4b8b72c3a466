"""The host engine's compiled decode step (host_kernels, host_step.cpp): the same logits as the op-by-op
decoder in every weight mode and architecture, a real build with g++, and what happens without one.

The run's own build (conftest's _compiled_host_step) is what the engines here load; the tests of a build
that cannot happen use their own cache directories and a subprocess (a process loads the library once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_host_decoder import ARCHS, IDS, tiny_model

from appliance import paths
from appliance.engine import host_kernels
from appliance.engine.host import HostEngine

MODES = ("none", "int8", "int4")


def decode_logits(engine: HostEngine, prompt: list[int], tokens: list[int]) -> list[torch.Tensor]:
    engine.truncate(0)
    engine.prefill(prompt)
    return [torch.from_numpy(engine.decode(t).logits) for t in tokens]  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(ARCHS))
def test_the_compiled_step_decodes_like_the_op_by_op_decoder(name: str, mode: str, tmp_path: Path) -> None:
    model_dir = tiny_model(tmp_path, name)
    compiled = HostEngine(model_dir, threads=1, quant=mode, quant_cache=tmp_path / "q")
    op_by_op = HostEngine(model_dir, threads=1, quant=mode, quant_cache=tmp_path / "q", compiled_step=False)
    assert compiled.info.details["decode_step"] == "compiled"
    assert op_by_op.info.details["decode_step"] == "op by op (compiled_step=False)"
    got = decode_logits(compiled, IDS[:4], IDS[4:])
    want = decode_logits(op_by_op, IDS[:4], IDS[4:])
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        # fp32: float rounding; int8/int4: a last-bit difference can flip the bf16 rounding of a
        # quantized layer's input, which moves its output by a bf16 step (0.4 %)
        bound = 1e-5 if mode == "none" else 1e-2
        assert float((g - w).abs().max()) <= bound * float(w.abs().max()), (i, float((g - w).abs().max()))
        assert int(g.argmax()) == int(w.argmax())


def test_the_compiled_step_keeps_prefix_reuse_exact(tmp_path: Path) -> None:
    """Tokens decoded one at a time leave the KV cache a later prompt reuses: a rewind and a new prompt
    give what the op-by-op decoder gives for the same positions."""
    model_dir = tiny_model(tmp_path, "qwen2")
    engine = HostEngine(model_dir, threads=1)
    ref = HostEngine(model_dir, threads=1, compiled_step=False).all_logits(IDS)
    decode_logits(engine, IDS[:3], IDS[3:9])  # positions 3..8 written by the compiled step
    engine.truncate(9)
    again = engine.prefill(IDS[9:]).logits
    assert again is not None
    assert abs(again - ref[-1].numpy()).max() < 1e-4 * float(ref.abs().max())


def test_the_fixture_runs_its_decode_steps_compiled(tiny_hf: Path, tmp_path: Path) -> None:
    engine = HostEngine(tiny_hf, threads=1, quant="int4", quant_cache=tmp_path)
    assert engine.wait_for_compiled_step(0) == "compiled"
    assert engine.info.details["runner"] == "lean decoder"


def _status_in_a_fresh_process(cache: Path, env: dict[str, str], wait: float = 120) -> dict[str, str]:
    """Build (or load) the step under ``cache`` in a new process: its status, and one decode's result."""
    code = f"""
import json, sys
from pathlib import Path
from appliance import paths
from appliance.engine import host_kernels
step = host_kernels.CompiledStep(Path({str(cache)!r}))
step.wait({wait})
print(json.dumps({{"status": step.status, "op": step.get() is not None}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_without_a_compiler_the_engine_decodes_op_by_op(tmp_path: Path, tiny_hf: Path) -> None:
    got = _status_in_a_fresh_process(tmp_path / "kernels", {"CXX": "no-such-compiler"})
    assert got == {"status": "unavailable: no C++ compiler (install g++, or set CXX)", "op": False}
    # and an engine in that state still answers (the step it would use is not there)
    code = f"""
import json, os
from pathlib import Path
os.environ["LLM_TPU_CACHE_DIR"] = {str(tmp_path / "cache")!r}
from appliance.engine.host import HostEngine
e = HostEngine(Path({str(tiny_hf)!r}), threads=1, quant="int8")
status = e.wait_for_compiled_step(60)
e.prefill([1, 2, 3])
print(json.dumps({{"status": status, "top": int(e.decode(5).logits.argmax())}}))
"""
    env = {**os.environ, "CXX": "no-such-compiler"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "unavailable: no C++ compiler (install g++, or set CXX)"
    op_by_op = HostEngine(tiny_hf, threads=1, quant="int8", quant_cache=tmp_path / "q", compiled_step=False)
    op_by_op.prefill([1, 2, 3])
    assert result["top"] == int(op_by_op.decode(5).logits.argmax())  # type: ignore[union-attr]


def test_a_failed_build_says_where_its_log_is_and_leaves_no_library(tmp_path: Path) -> None:
    cxx = tmp_path / "broken-c++"
    cxx.write_text("#!/bin/sh\necho 'internal compiler error: out of cheese' >&2\nexit 4\n")
    cxx.chmod(0o755)
    got = _status_in_a_fresh_process(tmp_path / "kernels", {"CXX": str(cxx)})
    assert got["op"] is False
    assert got["status"].startswith("unavailable: the build failed (broken-c++ exited with 4; see ")
    (entry,) = (tmp_path / "kernels").iterdir()
    assert "out of cheese" in (entry / "build.log").read_text()
    assert [p.name for p in entry.iterdir()] == ["build.log"]  # no partial library left behind


def test_a_cached_library_loads_at_once_and_one_that_does_not_load_is_built_again(tmp_path: Path) -> None:
    cache = tmp_path / "kernels"
    shutil.copytree(paths.cache_dir() / "host-kernels", cache)  # the run's own build
    (entry,) = cache.iterdir()
    library = entry / host_kernels.LIBRARY
    built = library.stat().st_mtime_ns
    compiled = {"status": "compiled", "op": True}
    assert _status_in_a_fresh_process(cache, {}, wait=0) == compiled  # loaded without waiting
    assert library.stat().st_mtime_ns == built
    library.write_bytes(b"\x7fELF truncated")
    assert _status_in_a_fresh_process(cache, {}) == compiled
    assert library.stat().st_mtime_ns != built and library.stat().st_size > 10_000


def test_the_cache_key_follows_the_source_torch_and_this_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    key = host_kernels._build_key(torch)
    monkeypatch.setattr(host_kernels, "_cpu_identity", lambda: "another cpu")
    assert host_kernels._build_key(torch) != key


def test_status_says_how_the_host_engine_decodes() -> None:
    from appliance.cli.status_cmd import _human

    model = {
        "name": "default",
        "engine": "host",
        "engine_details": {"quant": "int4", "decode_step": "compiled"},
    }
    assert "engine     quant int4, decode_step compiled" in _human({"status": "ready", "model": model})


def test_a_build_clears_what_an_interrupted_one_left(tmp_path: Path) -> None:
    """A process that exits during its build (``llm-tpu ask --local``) leaves a partial library."""
    key = host_kernels._build_key(torch)
    entry = tmp_path / "kernels" / key
    entry.mkdir(parents=True)
    stale, fresh = entry / f".{host_kernels.LIBRARY}.1.1", entry / f".{host_kernels.LIBRARY}.2.2"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"another build, still running")
    os.utime(stale, (0, 0))
    got = _status_in_a_fresh_process(tmp_path / "kernels", {"CXX": "/bin/false"})
    assert got["status"].startswith("unavailable: the build failed")
    assert not stale.exists() and fresh.exists()


def test_an_engine_switches_to_the_step_when_its_build_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first start decodes op by op while the step builds, then through it, on the same KV cache."""
    model_dir = tiny_model(tmp_path, "qwen3")
    monkeypatch.setenv("LLM_TPU_CACHE_DIR", str(tmp_path / "fresh-cache"))  # nothing built there yet
    engine = HostEngine(model_dir, threads=1)
    assert engine.info.details["decode_step"] == "building"
    ref = HostEngine(model_dir, threads=1, compiled_step=False).all_logits(IDS)
    engine.prefill(IDS[:3])
    before = [engine.decode(t).logits for t in IDS[3:6]]  # op by op: the build takes seconds
    assert engine.wait_for_compiled_step(host_kernels.BUILD_TIMEOUT_S) == "compiled"
    after = [engine.decode(t).logits for t in IDS[6:]]
    assert list((tmp_path / "fresh-cache" / "host-kernels").glob(f"*/{host_kernels.LIBRARY}"))
    for i, got in enumerate(before + after, start=3):
        assert got is not None and abs(got - ref[i].numpy()).max() < 1e-4 * float(ref.abs().max()), i
