"""Which nets a build has, how each is lowered (tpuc-opt options) and the order model_tool combines
them in. Pure data: :mod:`appliance.compile.driver` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.compile.source import ModelSpec

__all__ = ["BuildOptions", "NetJob", "plan_nets"]

QUANTS = ("bf16", "w4bf16")
Q_GROUP = 64  # llm_convert's default group size for w4
# lm_head weights: bf16 as llm_convert builds it, or weight-only int8/int4 with bf16 compute, per
# group of 64 along the hidden size (tpuc-opt's W8BF16/W4BF16; group 0, per channel, crashes
# tpuc-opt 1.30.2 with SIGFPE). The lm_head is 40-60% of the bytes a small model reads per token.
LM_HEAD_QUANTS = {"bf16": "bf16", "int8": "w8bf16", "int4": "w4bf16"}


@dataclass(frozen=True)
class BuildOptions:
    quant: str  # "bf16" | "w4bf16"
    seq: int
    sample: bool  # lm_head gives logits + greedy_head + sample_head (else lm_head has the argmax)
    lm_head: str = "bf16"  # a key of LM_HEAD_QUANTS

    @property
    def lm_head_quantized(self) -> bool:
        return self.lm_head != "bf16"


@dataclass(frozen=True)
class NetJob:
    """One net: its MLIR (``<name>/<name>.mlir`` in the work dir) and how to lower it."""

    name: str
    mode: str  # processor-assign mode: BF16 | W4BF16 | F32
    quantize: str  # model_deploy's --quantize spelling, part of the file prefix
    q_group_size: int
    addr_mode: str  # basic | io_alone
    quant_input: bool
    quant_output: bool
    dynamic: bool
    cost: float  # relative compile time, for the estimate

    @property
    def prefix(self) -> str:
        return f"{self.name}_bm1684x_{self.quantize}"


def _net(
    name: str,
    quantize: str,
    *,
    addr: str = "basic",
    qin: bool = True,
    qout: bool = True,
    dynamic: bool = False,
    group: int = 0,
    cost: float = 1.0,
) -> NetJob:
    return NetJob(name, quantize.upper(), quantize, group, addr, qin, qout, dynamic, cost)


def plan_nets(spec: ModelSpec, opts: BuildOptions) -> list[NetJob]:
    """The nets in model_tool --combine order (llm_convert's: sized ones first, shared-weight ones after)."""
    group = Q_GROUP if opts.quant.startswith("w4") else 0
    sized: list[NetJob] = [_net("embedding", "bf16")]
    unsized: list[NetJob] = [_net("embedding_cache", "bf16")]
    lm_quant = LM_HEAD_QUANTS[opts.lm_head]
    lm_head = _net("lm_head", lm_quant, qout=False, cost=2.0, group=Q_GROUP if opts.lm_head_quantized else 0)
    # tied and bf16, lm_head shares the embedding's data and llm_convert combines it after the sized nets
    (unsized if spec.tied and not opts.lm_head_quantized else sized).append(lm_head)
    if opts.sample:
        sized.append(_net("greedy_head", "f32", addr="io_alone", qin=False, qout=False))
        sized.append(
            _net("sample_head", "f32", addr="io_alone", qin=False, qout=False, dynamic=True, cost=2.0)
        )
    for i in range(spec.num_layers):
        sized.append(_net(f"block_cache_{i}", opts.quant, addr="io_alone", group=group, cost=3.0))
        unsized.append(_net(f"block_{i}", opts.quant, group=group, cost=3.0))
    # llm_convert registers lm_head/heads before the blocks but after embedding
    order = {"embedding": 0, "lm_head": 1, "greedy_head": 2, "sample_head": 3}
    sized.sort(key=lambda j: order.get(j.name, 4))
    return sized + unsized
