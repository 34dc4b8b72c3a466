"""The nets of a BM1684X LLM bmodel as top-dialect MLIR, laid out the way tpu-mlir 1.30.2's
llm_convert lays them out (compile-facts.md): the runtime finds nets, inputs and outputs by name.

Each function returns the MLIR text of one net; :func:`block_weights` and friends give the arrays of
the weights npz the net reads (``../<npz>`` relative to the net's own directory).
"""

from __future__ import annotations

import numpy as np

from appliance.compile import rope
from appliance.compile.mlir_text import Function, Value, bool_, f64, i32, i64, i64s, si32, string
from appliance.compile.source import Checkpoint, ModelSpec

__all__ = [
    "EMBED",
    "LM_HEAD",
    "block_cache_mlir",
    "block_mlir",
    "block_weights",
    "embedding_mlir",
    "greedy_head_mlir",
    "lm_head_mlir",
    "rotary_tables",
    "sample_head_mlir",
    "sample_head_weights",
]

EMBED = "model.embed_tokens"
LM_HEAD = "lm_head"
NORM = "model.norm"
TOP_K = 50  # sample_head keeps the 50 best logits
MIN_KEEP = 5  # ... and never fewer than 5 after top_p


def rotary_tables(spec: ModelSpec, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [seq, 1, head_dim] in float32, as transformers computes them (with the model's scaling)."""
    return rope.rotary_tables(spec.rope_theta, spec.head_dim, spec.rope_scaling, seq)


def embedding_mlir(spec: ModelSpec, name: str, length: int) -> str:
    f = Function(name, "../embedding_top_weights.npz", [((1, length), "si32")])
    ids = f.input(0, "input_ids")
    table = f.weight(EMBED + ".weight", (spec.vocab, spec.hidden))
    out = f.op("Gather", [table, ids], (1, length, spec.hidden), name, axis=si32(0))
    return f.text([out])


def lm_head_mlir(spec: ModelSpec, *, with_topk: bool, weight_right: bool = False) -> str:
    """llm_convert's lm_head: the [V, H] weight on the left, transposed hidden states on the right.

    ``weight_right``: hidden states [1, H] times the weight stored as [H, V] (lm_head_weight_right),
    the form of the blocks' projections, which tpuc-opt lowers to a weight-only quantized A16MatMul
    (with the weight on the left it stays bf16 whatever the mode).
    """
    f = Function("lm_head", "../lm_head_top_weights.npz", [((1, spec.hidden), "f32")])
    x = f.input(0, "hidden_states")
    if weight_right:
        w = f.weight(LM_HEAD + ".weight", (spec.hidden, spec.vocab))
        y = f.op("MatMul", [x, w, f.none], (1, spec.vocab), LM_HEAD, do_relu=bool_(False))
    else:
        w = f.weight(LM_HEAD + ".weight", (spec.vocab, spec.hidden))
        y = f.op(
            "MatMul",
            [w, x, f.none],
            (spec.vocab, 1),
            LM_HEAD,
            do_relu=bool_(False),
            right_transpose=bool_(True),
        )
        y = f.op("Reshape", [y], (1, spec.vocab), LM_HEAD + ".reshape")
    if not with_topk:
        return f.text([y])
    _, idx = f.op2("TopK", [y], ((1, 1), (1, 1)), ["token_value", "token_id"], axis=i64(1), K=i64(1))
    return f.text([idx])


def greedy_head_mlir(spec: ModelSpec) -> str:
    f = Function("greedy_head", "", [((1, spec.vocab), "f32")])
    x = f.input(0, "m_logits")
    _, idx = f.op2("TopK", [x], ((1, 1), (1, 1)), ["token_value", "token_id"], axis=i64(1), K=i64(1))
    return f.text([idx])


def sample_head_weights() -> dict[str, np.ndarray]:
    return {
        "Constant0": np.array([1.0], dtype=np.float32),
        "Constant1": np.array([[[0, i] for i in range(MIN_KEEP)]], dtype=np.float32),
        "Constant2": np.array([[1] * MIN_KEEP], dtype=np.float32),
    }


def sample_head_mlir(spec: ModelSpec, seq: int) -> str:
    """Repetition penalty over the history, top-k 50, temperature, top-p (keeping at least 5)."""
    v = spec.vocab
    ins = [((1, v), "f32"), ((1, seq), "si32"), ((1,), "f32"), ((1,), "f32"), ((1,), "si32"), ((1,), "f32")]
    f = Function("sample_head", "../sample_head_top_weights.npz", ins)
    logits = f.input(0, "m_logits")
    ids = f.input(1, "input_ids")
    penalty = f.input(2, "penalty")
    temperature = f.input(3, "temperature")
    top_k = f.input(4, "top_k", shape_tensor=[TOP_K])
    top_p = f.input(5, "top_p")
    seen = f.op("GatherElements", [logits, ids], (1, seq), "GatherElements", axis=i64(1))
    neg = f.op(
        "CompareConst",
        [seen],
        (1, seq),
        "CompareConst",
        mode=string("Less"),
        const_val=f64(0.0),
        inversed=bool_(False),
    )
    mul = f.op("Mul", [seen, penalty], (1, seq), "Mul")
    div = f.op("Div", [seen, penalty], (1, seq), "Div0")
    pen = f.op("Where", [neg, mul, div], (1, seq), "Where0")
    scattered = f.op("ScatterElements", [logits, ids, pen], (1, v), "ScatterElements", axis=i64(1))
    values, indices = f.op2(
        "TopK",
        [scattered, top_k],
        ((1, TOP_K), (1, TOP_K)),
        ["token_value", "token_idx"],
        axis=i64(1),
        K=i64(TOP_K),
    )
    scaled = f.op("Div", [values, temperature], (1, TOP_K), "Div1")
    probs = f.op("Softmax", [scaled], (1, TOP_K), "Softmax0", axis=si32(1))
    c0 = f.weight("Constant0", (1,))
    cum = f.op("CumSum", [probs, c0], (1, TOP_K), "CumSum", axis=i64(1))
    keep = f.op("Compare", [cum, top_p], (1, TOP_K), "Compare", mode=string("Less"))
    c1 = f.weight("Constant1", (1, MIN_KEEP, 2))
    c2 = f.weight("Constant2", (1, MIN_KEEP))
    keep = f.op("ScatterND", [keep, c1, c2], (1, TOP_K), "ScatterND", reduction=i32(0))
    masked = f.op(
        "Where",
        [keep, scaled, f.none],
        (1, TOP_K),
        "Where1",
        y_is_const=bool_(True),
        y_const_val=f64(-1000.0),
    )
    out = f.op("Softmax", [masked], (1, TOP_K), "Softmax1", axis=si32(1))
    return f.text([out, indices])


_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def block_weights(
    ckpt: Checkpoint, spec: ModelSpec, idx: int, cos: np.ndarray, sin: np.ndarray
) -> dict[str, np.ndarray]:
    """block_i's npz: rotary tables, norms, projections transposed to [in, out] (+ bias), in f32."""
    p = f"model.layers.{idx}."
    out: dict[str, np.ndarray] = {"rotary_cos.weight": cos, "rotary_sin.weight": sin}

    def linear(name: str) -> None:
        out[p + name + ".weight"] = np.ascontiguousarray(ckpt.read(p + name + ".weight").T)
        if p + name + ".bias" in ckpt:
            out[p + name + ".bias"] = ckpt.read(p + name + ".bias")

    out[p + "input_layernorm.weight"] = ckpt.read(p + "input_layernorm.weight")
    for name in _LINEARS:
        linear(name)
    if spec.qk_norm:
        for name in ("self_attn.q_norm.weight", "self_attn.k_norm.weight"):
            out[p + name] = ckpt.read(p + name)
    out[p + "post_attention_layernorm.weight"] = ckpt.read(p + "post_attention_layernorm.weight")
    for name in _MLP:
        linear(name)
    if idx == spec.num_layers - 1:
        out[NORM + ".weight"] = ckpt.read(NORM + ".weight")
    return out


class _Block:
    """What block_i and block_cache_i share: norms, projections, rotary, MLP (one layer)."""

    def __init__(self, f: Function, spec: ModelSpec, idx: int, biases: frozenset[str]) -> None:
        self.f, self.spec, self.idx, self.biases = f, spec, idx, biases
        self.p = f"model.layers.{idx}."

    def norm(self, x: Value, path: str, loc: str | None = None) -> Value:
        shape = x.shape
        w = self.f.weight(path + ".weight", (1,) * (len(shape) - 1) + (shape[-1],))
        return self.f.op(
            "RMSNorm", [x, w], shape, loc or path, eps=f64(self.spec.rms_eps), weight_keep_f32=bool_(False)
        )

    def linear(self, x: Value, name: str, k: int, n: int, out_shape: tuple[int, ...]) -> Value:
        path = self.p + name
        # the bias weight op comes first, as llm_convert emits it (op order can steer layer grouping)
        b = (
            self.f.weight(path + ".bias", (1,) * (len(out_shape) - 1) + (n,))
            if path + ".bias" in self.biases
            else self.f.none
        )
        w = self.f.weight(path + ".weight", (k, n))
        return self.f.op("MatMul", [x, w, b], out_shape, path, do_relu=bool_(False))

    def qkv(self, x: Value, length: int, *, with_shape_attr: bool) -> tuple[Value, Value, Value]:
        s, f, p = self.spec, self.f, self.p
        q = self.linear(x, "self_attn.q_proj", s.hidden, s.q_dim, (1, length, s.q_dim))
        k = self.linear(x, "self_attn.k_proj", s.hidden, s.kv_dim, (1, length, s.kv_dim))
        v = self.linear(x, "self_attn.v_proj", s.hidden, s.kv_dim, (1, length, s.kv_dim))
        qs, kvs = (1, length, s.heads, s.head_dim), (1, length, s.kv_heads, s.head_dim)
        qa = {"shape": i64s([1, -1, s.heads, s.head_dim])} if with_shape_attr else {}
        ka = {"shape": i64s([1, -1, s.kv_heads, s.head_dim])} if with_shape_attr else {}
        q = f.op("Reshape", [q], qs, p + "self_attn.q_proj.reshape", **qa)
        k = f.op("Reshape", [k], kvs, p + "self_attn.k_proj.reshape", **ka)
        v = f.op("Reshape", [v], kvs, "v_cache", **ka)
        if s.qk_norm:  # per head, over head_dim, before the rotary
            q = self.norm(q, p + "self_attn.q_norm")
            k = self.norm(k, p + "self_attn.k_norm")
        return q, k, v

    def rope(self, pos: Value, q: Value, k: Value, seq: int) -> tuple[Value, Value]:
        s, f = self.spec, self.f
        n = pos.shape[-1]
        tables = []
        for name in ("rotary_cos", "rotary_sin"):
            w = f.weight(name + ".weight", (seq, 1, s.head_dim))
            tables.append(f.op("Gather", [w, pos], (1, n, 1, s.head_dim), name, axis=si32(0)))
        cos, sin = tables
        mode = string("contiguous_halves")
        q = f.op("Rope", [q, sin, cos], q.shape, "q_proj", rope_mode=mode)
        k = f.op("Rope", [k, sin, cos], k.shape, "k_cache", rope_mode=mode)
        return q, k

    def attention_out(self, x: Value, attn: Value) -> Value:
        s = self.spec
        o = self.linear(attn, "self_attn.o_proj", s.q_dim, s.hidden, x.shape)
        return self.f.op("Add", [x, o], x.shape, self.p + "self_attn.o_proj.add")

    def mlp(self, x: Value) -> Value:
        s, f, p = self.spec, self.f, self.p
        shape = x.shape
        wide = (*shape[:-1], s.intermediate)
        h = self.norm(x, p + "post_attention_layernorm")
        gate = self.linear(h, "mlp.gate_proj", s.hidden, s.intermediate, wide)
        act = f.op("SiLU", [gate], wide, p + "mlp.gate_proj.silu")
        up = self.linear(h, "mlp.up_proj", s.hidden, s.intermediate, wide)
        mul = f.op("Mul", [act, up], wide, p + "mlp.up_proj.mul")
        down = self.linear(mul, "mlp.down_proj", s.intermediate, s.hidden, shape)
        last = self.idx == s.num_layers - 1
        out = f.op("Add", [x, down], shape, p + "mlp.down_proj.add" if last else "output_states")
        if last:  # the final norm rides on the last block (1 device)
            out = self.norm(out, NORM, "output_states")
        return out

    def fattention(
        self, q: Value, k: Value, v: Value, mask: Value, mq: int, mk: int, **extra: object
    ) -> Value:
        s = self.spec
        attrs = dict(
            scale=f64(s.head_dim**-0.5),
            batch=i64(1),
            q_head=i64(s.heads),
            kv_head=i64(s.kv_heads),
            dim=i64(s.head_dim),
            mq=i64(mq),
            mk=i64(mk),
            keep_dims=bool_(False),
        )
        if extra.get("mask_size") is not None:
            attrs["mask_size"] = si32(int(extra["mask_size"]))  # type: ignore[call-overload]
        return self.f.op(
            "FAttention", [q, k, v, mask, self.f.none], (1, mq, s.q_dim), self.p + "fattention", **attrs
        )


def _block_inputs(spec: ModelSpec, length: int, mask_len: int) -> list[tuple[tuple[int, ...], str]]:
    return [((1, length, spec.hidden), "f32"), ((1, length), "si32"), ((1, 1, length, mask_len), "f32")]


def block_mlir(spec: ModelSpec, idx: int, seq: int, biases: frozenset[str]) -> str:
    """Prefill over the whole (padded) sequence with a [1,1,S,S] mask input."""
    f = Function(f"block_{idx}", f"../block_{idx}_top_weights.npz", _block_inputs(spec, seq, seq))
    b = _Block(f, spec, idx, biases)
    x, pos, mask = f.input(0, "input_states"), f.input(1, "position_ids"), f.input(2, "attention_mask")
    h = b.norm(x, b.p + "input_layernorm")
    q, k, v = b.qkv(h, seq, with_shape_attr=True)
    q, k = b.rope(pos, q, k, seq)
    attn = b.fattention(q, k, v, mask, seq, seq, mask_size=0)
    out = b.mlp(b.attention_out(x, attn))
    return f.text([out, k, v])


def block_cache_mlir(spec: ModelSpec, idx: int, seq: int, biases: frozenset[str]) -> str:
    """One decode step: history K/V [1,S,kv,D] concatenated with the new token's before attention."""
    hist = ((1, seq, spec.kv_heads, spec.head_dim), "f32")
    f = Function(
        f"block_cache_{idx}",
        f"../block_{idx}_top_weights.npz",
        [*_block_inputs(spec, 1, seq + 1), hist, hist],
    )
    b = _Block(f, spec, idx, biases)
    x, pos, mask = f.input(0, "input_states"), f.input(1, "position_ids"), f.input(2, "attention_mask")
    hk, hv = f.input(3, "history_k"), f.input(4, "history_v")
    h = b.norm(x, b.p + "input_layernorm")
    q, k, v = b.qkv(h, 1, with_shape_attr=False)
    q, k = b.rope(pos, q, k, seq)
    full = (1, seq + 1, spec.kv_heads, spec.head_dim)
    kk = f.op("Concat", [hk, k], full, b.p + "self_attn.k_proj.concat", axis=si32(1), only_merge=bool_(True))
    vv = f.op("Concat", [hv, v], full, b.p + "self_attn.v_proj.concat", axis=si32(1), only_merge=bool_(True))
    attn = b.fattention(q, kk, vv, mask, 1, seq + 1)
    out = b.mlp(b.attention_out(x, attn))
    return f.text([out, k, v])
