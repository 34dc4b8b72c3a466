"""The resumable work directory of one build: the nets' MLIR and weights, finished nets, scratch.

Layout (llm_convert's, since each MLIR names its weights as ``../<npz>``)::

    <work>/embedding_top_weights.npz  lm_head_top_weights.npz  block_<i>_top_weights.npz ...
    <work>/<net>/<net>.mlir           (+ tpuc-opt's intermediates while the net compiles)
    <work>/done/<net>.bmodel          a finished net; a rerun skips it

Every file appears by rename, so an interrupted run never leaves a file that looks finished. A
weights npz is deleted as soon as every net that reads it is done.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from appliance.compile import nets
from appliance.compile.plan import BuildOptions, NetJob
from appliance.compile.source import Checkpoint, ModelSpec

__all__ = ["WorkDir"]


def _npz_of(net: str) -> str | None:
    if net in ("embedding", "embedding_cache"):
        return "embedding_top_weights.npz"
    if net == "lm_head":
        return "lm_head_top_weights.npz"
    if net == "sample_head":
        return "sample_head_top_weights.npz"
    if net.startswith("block_"):
        return f"block_{net.rsplit('_', 1)[1]}_top_weights.npz"
    return None


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


class WorkDir:
    def __init__(self, root: Path, spec: ModelSpec, opts: BuildOptions, jobs: list[NetJob]) -> None:
        self.root, self.spec, self.opts, self.jobs = root, spec, opts, jobs
        self.done_dir = root / "done"

    def bmodel(self, net: str) -> Path:
        return self.done_dir / f"{net}.bmodel"

    def is_done(self, net: str) -> bool:
        return self.bmodel(net).is_file()

    def net_dir(self, net: str) -> Path:
        return self.root / net

    def check_identity(self, identity: dict[str, object]) -> None:
        """A work dir belongs to one source + options; a different build starts it afresh."""
        stamp = self.root / "build.json"
        if stamp.is_file():
            try:
                same = json.loads(stamp.read_text(encoding="utf-8")) == identity
            except (OSError, json.JSONDecodeError):
                same = False
            if same:
                return
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(stamp, lambda p: p.write_text(json.dumps(identity, indent=2), encoding="utf-8"))

    def prepare(self, ckpt: Checkpoint) -> None:
        """Write the MLIR and weights of every net that is not done yet (skipping what exists)."""
        self.done_dir.mkdir(parents=True, exist_ok=True)
        todo = [j for j in self.jobs if not self.is_done(j.name)]
        needed = {n for j in todo if (n := _npz_of(j.name))}
        spec, seq = self.spec, self.opts.seq
        biases = frozenset(n for n in ckpt.names() if n.endswith(".bias"))
        cos, sin = nets.rotary_tables(spec, seq)

        def npz(name: str, arrays: Callable[[], dict[str, np.ndarray]]) -> None:
            path = self.root / name
            if name in needed and not path.is_file():
                _write_atomic(path, lambda p: _savez(p, arrays()))

        embed = nets.EMBED + ".weight"
        npz("embedding_top_weights.npz", lambda: {embed: ckpt.read(embed)})
        lm_key = embed if spec.tied else nets.LM_HEAD + ".weight"

        def lm_head() -> dict[str, np.ndarray]:
            w = ckpt.read(lm_key)  # [V, H]; [H, V] for a quantized lm_head (nets.lm_head_mlir)
            return {nets.LM_HEAD + ".weight": np.ascontiguousarray(w.T) if self.opts.lm_head_quantized else w}

        npz("lm_head_top_weights.npz", lm_head)
        npz("sample_head_top_weights.npz", nets.sample_head_weights)
        for i in range(spec.num_layers):
            npz(f"block_{i}_top_weights.npz", lambda i=i: nets.block_weights(ckpt, spec, i, cos, sin))  # type: ignore[misc]
        for job in todo:
            d = self.net_dir(job.name)
            d.mkdir(exist_ok=True)
            mlir = d / f"{job.name}.mlir"
            if not mlir.is_file():
                text = self._mlir(job.name, biases)
                _write_atomic(mlir, lambda p, text=text: p.write_text(text, encoding="utf-8"))  # type: ignore[misc]

    def _mlir(self, net: str, biases: frozenset[str]) -> str:
        spec, seq = self.spec, self.opts.seq
        if net == "embedding":
            return nets.embedding_mlir(spec, net, seq)
        if net == "embedding_cache":
            return nets.embedding_mlir(spec, net, 1)
        if net == "lm_head":
            return nets.lm_head_mlir(
                spec, with_topk=not self.opts.sample, weight_right=self.opts.lm_head_quantized
            )
        if net == "greedy_head":
            return nets.greedy_head_mlir(spec)
        if net == "sample_head":
            return nets.sample_head_mlir(spec, seq)
        idx = int(net.rsplit("_", 1)[1])
        if net.startswith("block_cache_"):
            return nets.block_cache_mlir(spec, idx, seq, biases)
        return nets.block_mlir(spec, idx, seq, biases)

    def finish(self, net: str) -> None:
        """Keep the net's bmodel, drop its scratch, and any npz no unfinished net reads any more."""
        os.replace(self.net_dir(net) / f"{net}.bmodel", self.bmodel(net))
        shutil.rmtree(self.net_dir(net), ignore_errors=True)
        name = _npz_of(net)
        if name and all(self.is_done(j.name) for j in self.jobs if _npz_of(j.name) == name):
            (self.root / name).unlink(missing_ok=True)

    def scratch_bytes(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                try:
                    total += (Path(dirpath) / f).stat().st_size
                except OSError:
                    pass
        return total


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
