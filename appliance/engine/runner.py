"""LLM orchestration over a TPU backend: prefill, decode, KV cache, heads (shared by bmrt and sail).

Conventions (sophgo-facts.md section 2, observed on the cmodel with tokens equal to torch):

- Prefill of L tokens: ids zero-padded to SEQLEN; position ids 0..L-1 then 0; mask SEQLEN x SEQLEN,
  0 where column <= row < L, the mask value elsewhere (bf16 0xC61C, f16 -10000). Dynamic prefill nets
  get the real length L and no mask. ``lm_head`` gets hidden row L-1.
- Decode at position p: position id p; mask of SEQLEN+1 entries, 0 for columns < p and for the last
  one; the returned k/v row is written to cache row p (element offset p * KV * HD), after the call.
- Hidden states stay on the device (device-to-device copies between nets); only the token, the
  50 sampling candidates, or the logits (when the host must sample) come back.
- KV cache: in the ``block_cache_i`` nets' own history inputs when they are io_alone (addr_mode 1),
  in buffers the engine allocates when addr_mode is 0 (the nets' I/O then lives in shared memory).
- Multi-device: per-device I/O, device after device (3 per device for block nets, 5 inputs for
  block_cache nets); every device gets the token; each device's hidden state feeds its own next net.

Prefix reuse: block nets have no history input, so the cache cannot be extended by a prefill. A
suffix of at most ``suffix_decode_max`` tokens is appended with decode steps (exact, cost grows with
the new tokens only); a longer one re-prefills the kept prefix plus the suffix from position 0
(also exact; a static prefill costs the same at any length). Both give the full-prefill result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from appliance.bmodel.layout import DTYPE_BF16, LlmLayout, NetDesc, io_index
from appliance.engine.protocol import Capabilities, DeviceSampling, EngineInfo, EngineLimits, StepOutput
from appliance.errors import ContextOverflow, InvalidRequest

__all__ = ["MASK_BF16", "MASK_F16", "Backend", "LlmRunner", "layout_details"]

MASK_BF16 = 0xC61C  # about -9984, the bit pattern the vendor uses for bf16
MASK_F16 = int(np.array(-10000.0, np.float16).view(np.uint16))
SUFFIX_DECODE_MAX = 8
CAND = 50


def layout_details(layout: LlmLayout) -> dict[str, str]:
    """The layout in words, for EngineInfo.details (bmrt and sail report it the same way)."""
    return {
        "layout": (
            f"{layout.layers} layers, seq {layout.seq_len}, {layout.dtype_name}, "
            f"lm_head {'greedy' if layout.lm_head_greedy else 'logits'}, "
            f"heads {','.join(layout.heads) or 'none'}, "
            f"{'dynamic' if layout.dynamic_prefill else 'static'} prefill, "
            f"KV {'io_alone' if layout.cache_addr_mode == 1 else 'app buffers'}"
        ),
        "devices": str(layout.devices),
        "prefix_reuse": "decode steps for short suffixes, re-prefill from 0 otherwise",
    }


class Backend(Protocol):
    """What the orchestration needs from a TPU runtime; buffers and calls are opaque to it."""

    nets: dict[str, NetDesc]

    def net_io(self, net: str) -> tuple[list[Any], list[Any]]: ...
    def alloc(self, nbytes: int, dev: int = 0) -> Any: ...
    def upload(self, dst: Any, src: np.ndarray) -> None: ...
    def download(self, src: Any, out: np.ndarray) -> np.ndarray: ...
    def copy(self, dst: Any, dst_off: int, src: Any, src_off: int, nbytes: int) -> None: ...
    def view(self, buf: Any, offset: int, nbytes: int) -> Any: ...
    def prepare(self, net: str, inputs: Sequence[Any], outputs: Sequence[Any]) -> Any: ...
    def rebind_output(self, call: Any, index: int, buf: Any) -> None: ...
    def run(self, call: Any, shapes: Sequence[Sequence[int]] | None = None) -> None: ...
    def close(self) -> None: ...


class LlmRunner:
    """Implements the Engine protocol on any :class:`Backend` for an LLM-TPU layout."""

    def __init__(
        self,
        backend: Backend,
        layout: LlmLayout,
        info: EngineInfo,
        *,
        suffix_decode_max: int = SUFFIX_DECODE_MAX,
        vocab_size: int | None = None,
    ) -> None:
        self.b = backend
        self.lay = layout
        self._info = info
        self.suffix_decode_max = suffix_decode_max
        self.greedy_on_device = True  # False: return logits even when a greedy_head exists
        self._tokens: list[int] = []
        self._closed = False
        lay = layout
        self._mask_value = MASK_BF16 if lay.act_dtype == DTYPE_BF16 else MASK_F16
        self._row_bytes = lay.kv_row_elements * 2  # one KV row, 16-bit
        self._hidden_bytes = lay.hidden * 2
        self._limits = EngineLimits(max_seq_len=lay.seq_len, vocab_size=lay.vocab or (vocab_size or 0))
        self._caps = Capabilities(
            returns_logits=not lay.lm_head_greedy,
            device_sampling=lay.sample_head is not None,
            prefix_reuse=True,
        )
        self._setup_buffers()
        self._dmask = np.full(lay.seq_len + 1, self._mask_value, np.uint16)
        self._dmask[-1] = 0
        self._dmask_open = 0  # columns [0, _dmask_open) are 0
        self._i32 = np.zeros(1, np.int32)

    # -- setup ---------------------------------------------------------------------------------
    def _setup_buffers(self) -> None:
        b, lay, nd = self.b, self.lay, self.lay.devices
        self.emb_in, self.emb_out = b.net_io("embedding")
        self.embc_in, self.embc_out = b.net_io("embedding_cache")
        self.lm_in, self.lm_out = b.net_io("lm_head")
        pin = 3 if lay.prefill_has_mask else 2
        self.blocks = [b.net_io(f"block_{i}") for i in range(lay.layers)]
        self.caches = [b.net_io(f"block_cache_{i}") for i in range(lay.layers)]
        kv_bytes = lay.seq_len * self._row_bytes
        # KV per layer and device: the io_alone nets' own history inputs, or our own buffers
        self.kv: list[list[tuple[Any, Any]]] = []
        for i, (cin, _) in enumerate(self.caches):
            per_dev = []
            for d in range(nd):
                if lay.cache_addr_modes[i] == 1:
                    per_dev.append((cin[io_index(3, d, 5)], cin[io_index(4, d, 5)]))
                else:
                    per_dev.append((b.alloc(kv_bytes, d), b.alloc(kv_bytes, d)))
            self.kv.append(per_dev)
        # decode: position and mask live in layer 0's inputs and are shared by every layer
        c0 = self.caches[0][0]
        self.dpos = [c0[io_index(1, d, 5)] for d in range(nd)]
        self.dmask = [c0[io_index(2, d, 5)] for d in range(nd)]
        # Zero-copy decode chain: each net reads the previous net's output memory, and the new K/V
        # rows are written by the net straight into the cache (outputs rebound to row p each step).
        self.decode_calls = []
        for i, (_, cout) in enumerate(self.caches):
            ins = []
            for d in range(nd):
                k, v = self.kv[i][d]
                if i == 0:
                    hidden = self.embc_out[d if len(self.embc_out) == nd else 0]
                else:
                    hidden = self.caches[i - 1][1][io_index(0, d, 3)]
                ins += [hidden, self.dpos[d], self.dmask[d], k, v]
            self.decode_calls.append(b.prepare(f"block_cache_{i}", ins, cout))
        # prefill: same sharing of position (and mask) through block 0's inputs
        p0 = self.blocks[0][0]
        self.ppos = [p0[io_index(1, d, pin)] for d in range(nd)]
        self.pmask = [p0[io_index(2, d, pin)] for d in range(nd)] if lay.prefill_has_mask else []
        self.prefill_calls = []
        for i, (bin_, bout) in enumerate(self.blocks):
            ins = []
            for d in range(nd):
                ins.append(bin_[io_index(0, d, pin)])
                ins.append(self.ppos[d])
                if lay.prefill_has_mask:
                    ins.append(self.pmask[d])
            self.prefill_calls.append(b.prepare(f"block_{i}", ins, bout))
        self.emb_call = b.prepare("embedding", self.emb_in, self.emb_out)
        self.embc_call = b.prepare("embedding_cache", self.embc_in, self.embc_out)
        self.lm_call = b.prepare("lm_head", self.lm_in, self.lm_out)
        self.lm_decode_call = b.prepare("lm_head", [self.caches[-1][1][0]], self.lm_out)
        self.greedy = None
        if "greedy_head" in lay.heads and not lay.lm_head_greedy:
            gin, gout = b.net_io("greedy_head")
            self.greedy = (gin, gout, b.prepare("greedy_head", [self.lm_out[0]], gout))
        self.sampler = None
        if lay.sample_head is not None:
            sin, sout = b.net_io(lay.sample_head)
            self.sampler = (sin, sout, b.prepare(lay.sample_head, [self.lm_out[0], *sin[1:]], sout))
            names = [d.name for d in b.nets[lay.sample_head].inputs]
            known = {"m_logits", "input_ids", "penalty", "temperature", "top_k", "top_p"}
            self._sample_names = names if set(names[1:]) <= known else _default_sample_inputs(lay.sample_head)

    # -- Engine protocol -----------------------------------------------------------------------
    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def limits(self) -> EngineLimits:
        return self._limits

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def n_past(self) -> int:
        return len(self._tokens)

    def truncate(self, n: int) -> None:
        if not 0 <= n <= len(self._tokens):
            raise InvalidRequest(f"cannot keep {n} positions: the cache holds {len(self._tokens)}")
        del self._tokens[n:]

    def prefill(self, ids: Sequence[int], sampling: DeviceSampling | None = None) -> StepOutput:
        ids = [int(t) for t in ids]
        if not ids:
            raise InvalidRequest("prefill needs at least one token")
        total = len(self._tokens) + len(ids)
        if total > self.lay.seq_len:
            raise ContextOverflow(
                f"{total} positions do not fit the model's context of {self.lay.seq_len}",
                hint="shorten the conversation or use a bmodel compiled for a longer sequence",
            )
        if self._tokens and len(ids) <= self.suffix_decode_max:
            for t in ids[:-1]:
                self._decode_layers(t)
            return self._decode(ids[-1], sampling)
        ids = self._tokens + ids
        self._tokens = []
        return self._prefill(ids, sampling)

    def decode(self, token: int, sampling: DeviceSampling | None = None) -> StepOutput:
        if len(self._tokens) >= self.lay.seq_len:
            raise ContextOverflow(
                f"the context of {self.lay.seq_len} positions is full",
                hint="start a new conversation or use a bmodel compiled for a longer sequence",
            )
        return self._decode(int(token), sampling)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.b.close()

    # -- steps ---------------------------------------------------------------------------------
    def _prefill(self, ids: list[int], sampling: DeviceSampling | None) -> StepOutput:
        b, lay, n = self.b, self.lay, len(ids)
        seq, nd = lay.seq_len, lay.devices
        tok = np.zeros(seq, np.int32)
        tok[:n] = ids
        b.upload(self.emb_in[0], tok)
        b.run(self.emb_call)
        pos = np.zeros(seq, np.int32)
        pos[:n] = np.arange(n, dtype=np.int32)
        for d in range(nd):
            b.upload(self.ppos[d], pos)
        if lay.prefill_has_mask:
            mask = np.full((seq, seq), self._mask_value, np.uint16)
            mask[:n, :n][np.tri(n, dtype=bool)] = 0
            for d in range(nd):
                b.upload(self.pmask[d], mask)
        rows = n if lay.dynamic_prefill else seq
        shapes = None
        if lay.dynamic_prefill:
            shapes = [(1, n, lay.hidden), (1, n)] * nd
        pin = 3 if lay.prefill_has_mask else 2
        for d in range(nd):
            src = self.emb_out[d if len(self.emb_out) == nd else 0]
            b.copy(self.blocks[0][0][io_index(0, d, pin)], 0, src, 0, rows * self._hidden_bytes)
        for i, call in enumerate(self.prefill_calls):
            b.run(call, shapes)
            _, bout = self.blocks[i]
            for d in range(nd):
                k, v = self.kv[i][d]
                b.copy(k, 0, bout[io_index(1, d, 3)], 0, n * self._row_bytes)
                b.copy(v, 0, bout[io_index(2, d, 3)], 0, n * self._row_bytes)
                if i + 1 < lay.layers:
                    nxt = self.blocks[i + 1][0][io_index(0, d, pin)]
                    b.copy(nxt, 0, bout[io_index(0, d, 3)], 0, rows * self._hidden_bytes)
        last = self.blocks[-1][1][0]
        b.copy(self.lm_in[0], 0, last, (n - 1) * self._hidden_bytes, self._hidden_bytes)
        self._tokens = ids
        return self._head(sampling)

    def _decode_layers(self, token: int) -> None:
        b, lay, nd = self.b, self.lay, self.lay.devices
        p = len(self._tokens)
        self._i32[0] = token
        b.upload(self.embc_in[0], self._i32)
        b.run(self.embc_call)
        m = self._dmask
        if p > self._dmask_open:
            m[self._dmask_open : p] = 0
        elif p < self._dmask_open:
            m[p : lay.seq_len] = self._mask_value
        self._dmask_open = p
        self._i32[0] = p
        for d in range(nd):
            b.upload(self.dpos[d], self._i32)
            b.upload(self.dmask[d], m)
        off, row = p * self._row_bytes, self._row_bytes
        for i, call in enumerate(self.decode_calls):
            for d in range(nd):
                k, v = self.kv[i][d]
                b.rebind_output(call, io_index(1, d, 3), b.view(k, off, row))
                b.rebind_output(call, io_index(2, d, 3), b.view(v, off, row))
            b.run(call)
        self._tokens.append(token)

    def _decode(self, token: int, sampling: DeviceSampling | None) -> StepOutput:
        self._decode_layers(token)
        return self._head(sampling, self.lm_decode_call)

    def _head(self, sampling: DeviceSampling | None, lm_call: Any = None) -> StepOutput:
        b = self.b
        b.run(lm_call if lm_call is not None else self.lm_call)
        if self.lay.lm_head_greedy:
            return StepOutput(token=int(b.download(self.lm_out[0], self._i32)[0]))
        if sampling is not None and self.sampler is not None:
            return self._sample(sampling)
        if sampling is None and self.greedy is not None and self.greedy_on_device:
            _, gout, call = self.greedy
            b.run(call, [(1, self.lay.vocab)])
            return StepOutput(token=int(b.download(gout[0], self._i32)[0]))
        logits = np.empty(self.lay.vocab, np.float32)
        return StepOutput(logits=b.download(self.lm_out[0], logits))

    def _sample(self, s: DeviceSampling) -> StepOutput:
        assert self.sampler is not None
        b, lay = self.b, self.lay
        sin, sout, call = self.sampler
        recent = list(s.recent_ids[-lay.seq_len :]) or self._tokens[-1:] or [0]
        hist = np.full(lay.seq_len, recent[-1], np.int32)  # vendor: pad with the last id
        hist[: len(recent)] = recent
        values: dict[str, npt.NDArray[Any]] = {
            "input_ids": hist,
            "penalty": np.array([s.repetition_penalty], np.float32),
            "temperature": np.array([max(s.temperature, 1e-5)], np.float32),
            "top_k": np.array([s.top_k if s.top_k > 0 else CAND], np.int32),
            "top_p": np.array([s.top_p], np.float32),
        }
        names = self._sample_names
        shapes: list[tuple[int, ...]] = [(1, lay.vocab)]
        for i, name in enumerate(names[1:], start=1):
            arr = values[name]
            b.upload(sin[i], arr)
            shapes.append((1, lay.seq_len) if name == "input_ids" else (1,))
        b.run(call, shapes)
        probs = b.download(sout[0], np.empty(CAND, np.float32))
        ids = b.download(sout[1], np.empty(CAND, np.int32)).astype(np.int64)
        return StepOutput(candidates=(probs, ids))


def _default_sample_inputs(head: str) -> list[str]:
    if head == "penalty_sample_head":
        return ["m_logits", "input_ids", "top_p", "temperature", "penalty"]
    return ["m_logits", "input_ids", "penalty", "temperature", "top_k", "top_p"]
