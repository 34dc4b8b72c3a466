"""Structured output: a JSON schema enforced on the logits, token by token (constrained decoding).

The grammar engine is llguidance (guidance-ai, MIT). Chosen over outlines-core and xgrammar because it
ships one abi3 wheel per platform (every CPython >= 3.9, no rebuild per Python) for Linux x86_64 and
aarch64 with a manylinux tag the Debian 11 box takes (glibc 2.28 <= 2.31), has no Python dependencies
(xgrammar pulls torch), compiles a JSON schema lazily (no whole-vocabulary automaton built up front, so a
schema costs milliseconds, not seconds) and computes the allowed-token mask in Rust in well under a
millisecond per step for a 150k vocabulary.

Each step the sampler sets every token the grammar does not allow to -inf; the token drawn is fed to
the matcher. The end-of-sequence token is allowed only where the grammar accepts (the object is
complete), and every stop id of the template counts as one. Works only where the host sampler sees
logits; engines that return tokens are refused before the request is queued (Generator.refuse_unsupported).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from appliance.errors import InvalidRequest, ModelFormatError
from appliance.generation.tokenizer import ChatTokenizer

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

__all__ = [
    "ANY_JSON_OBJECT",
    "GrammarTokenizer",
    "JsonConstraint",
    "check_schema",
    "refuse_tokenizer",
    "schema_text",
]

ANY_JSON_OBJECT = '{"type": "object"}'  # Ollama format "json", OpenAI json_object
# JSON with single spaces after ':' and ',' and no other whitespace: a model cannot pad the answer with
# whitespace forever, and the text reads like json.dumps output
_COMPILE_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}


def schema_text(schema: dict[str, Any], where: str) -> str:
    """The schema as the text GenerationOptions carries, checked (InvalidRequest naming ``where``)."""
    try:
        text = json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{where}: the JSON schema cannot be serialized: {exc}") from None
    check_schema(text, where)
    return text


def _grammar(schema: str) -> str:
    import llguidance

    return str(llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=_COMPILE_OPTIONS))


def check_schema(schema: str, where: str) -> None:
    """InvalidRequest when llguidance cannot compile ``schema`` (cheap: no tokenizer involved)."""
    import llguidance

    try:
        grammar = _grammar(schema)
    except ValueError as exc:
        raise InvalidRequest(f"{where}: not a JSON schema object: {exc}") from None
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error and not error.startswith("WARNING"):
        raise InvalidRequest(
            f"{where}: the JSON schema is not supported: {error}",
            hint="see https://github.com/guidance-ai/llguidance/blob/main/docs/json_schema.md",
        )


def refuse_tokenizer(tokenizer: ChatTokenizer) -> None:
    """InvalidRequest when llguidance cannot read this tokenizer (it reads tokenizer.json; cheap)."""
    if not hasattr(tokenizer.backend, "to_json"):
        raise InvalidRequest(
            "format / response_format (structured JSON output) needs a tokenizer.json tokenizer; "
            f"this model's tokenizer ({tokenizer.source}) has another format",
            hint="omit it for this model",
        )


class GrammarTokenizer:
    """The model's vocabulary as llguidance needs it (built once per served model: ~1 s for 150k tokens)."""

    def __init__(self, tokenizer: ChatTokenizer, *, n_vocab: int, stop_ids: frozenset[int]) -> None:
        import llguidance

        refuse_tokenizer(tokenizer)
        if not stop_ids:
            raise ModelFormatError("structured output needs an end-of-sequence id; the template has none")
        self.stop_ids = stop_ids
        self.eos = min(stop_ids)
        self.n_vocab = max(n_vocab, tokenizer.vocab_size)
        text: str = tokenizer.backend.to_json()  # type: ignore[attr-defined]  # refuse_tokenizer checked it
        self.ll = llguidance.LLTokenizer(text, n_vocab=self.n_vocab, eos_token=self.eos)
        self.stop_array = np.fromiter(sorted(stop_ids), dtype=np.int64)


class JsonConstraint:
    """One answer's matcher: masks logits, follows the tokens drawn."""

    def __init__(self, vocab: GrammarTokenizer, schema: str) -> None:
        import llguidance

        self.vocab = vocab
        self.matcher = llguidance.LLMatcher(vocab.ll, _grammar(schema), log_level=0)
        if self.matcher.is_error():
            raise InvalidRequest(f"the JSON schema is not supported: {self.matcher.get_error()}")

    def mask(self, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``logits`` with every token the grammar forbids at -inf (a stop id wherever EOS is allowed)."""
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[: logits.shape[0]].astype(bool)
        if allowed.shape[0] < logits.shape[0]:
            allowed = np.concatenate([allowed, np.zeros(logits.shape[0] - allowed.shape[0], dtype=bool)])
        stops = self.vocab.stop_array[self.vocab.stop_array < logits.shape[0]]
        allowed[stops] = allowed[self.vocab.eos]
        if not allowed.any():  # the matcher failed (cannot happen for a token it allowed): end the answer
            allowed[stops] = True
        return np.where(allowed, logits, np.float32(-np.inf)).astype(np.float32, copy=False)

    def advance(self, token: int) -> None:
        """Feed the token drawn (not a stop id: those end the answer)."""
        if not self.matcher.consume_token(token):
            raise InvalidRequest(
                f"structured output: the grammar refused token {token}: {self.matcher.get_error()}"
            )
