"""Tokenizers for chat: encode/decode plus the special tokens a chat template needs.

Every seed family loads without transformers (tokenizer_formats.py): ``tokenizer.json`` and GPT-2
``vocab.json`` + ``merges.txt`` through ``tokenizers``, ``qwen.tiktoken`` through ``tiktoken``,
``tokenizer.model`` through ``sentencepiece``. Only a directory in none of these formats falls back to
``transformers.AutoTokenizer``, and only where the host extra is installed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from appliance.errors import ModelFormatError
from appliance.generation.tokenizer_formats import (
    SentencePieceBackend,
    TiktokenBackend,
    bpe_tokenizer,
    detect_format,
)

__all__ = ["ChatTokenizer", "TokenizerBackend", "open_backend"]


class TokenizerBackend(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def token_to_id(self, token: str) -> int | None: ...
    def min_tokens(self, text: str) -> int: ...
    def special_tokens(self) -> frozenset[str]: ...
    def encode_literal(self, text: str) -> list[int]: ...
    @property
    def vocab_size(self) -> int: ...


# Normalizers (NFKC, NFC) can shorten text before it is split: the bound allows for a third.
NORMALIZATION_SLACK = 3


def _bound_from_vocab(vocab: Any) -> int:
    """Bytes one token can cover at most, times the slack: the divisor of a token-count lower bound.
    A vocabulary string is never shorter in UTF-8 than the text it stands for (byte-level and
    metaspace pieces spell each text byte with one or more bytes)."""
    longest = max((len(str(t).encode("utf-8", "surrogatepass")) for t in vocab), default=1)
    return NORMALIZATION_SLACK * max(longest, 1)


class _FastBackend:
    """A ``tokenizers.Tokenizer``: tokenizer.json, or one built from vocab.json + merges.txt."""

    def __init__(self, path: Path | None = None, *, tokenizer: Any = None) -> None:
        from tokenizers import Tokenizer

        if tokenizer is not None:
            self._tok = tokenizer
        else:
            try:
                self._tok = Tokenizer.from_file(str(path))
            except Exception as exc:  # the library raises plain Exception subclasses for bad JSON
                raise ModelFormatError(
                    f"{path} is not a valid tokenizer: {exc}", hint="reinstall the model's tokenizer files"
                ) from None
        self._bytes_per_token = _bound_from_vocab(self._tok.get_vocab(with_added_tokens=True))
        added = self._tok.get_added_tokens_decoder().values()
        self._special = frozenset(str(t.content) for t in added if t.special)
        self._literal: Any = None  # a copy that reads special tokens in text as text, made when needed

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=False))

    def min_tokens(self, text: str) -> int:
        """A lower bound of len(encode(text)), without tokenizing."""
        return len(text.encode("utf-8", "surrogatepass")) // self._bytes_per_token

    def special_tokens(self) -> frozenset[str]:
        """The special added tokens encode() turns into their ids when it meets their text."""
        return self._special

    def encode_literal(self, text: str) -> list[int]:
        """``text`` as plain text: special tokens written in it are split like any other text."""
        if self._literal is None:
            from tokenizers import Tokenizer

            self._literal = Tokenizer.from_str(self._tok.to_str())
            self._literal.encode_special_tokens = True
        return list(self._literal.encode(text, add_special_tokens=False).ids)

    def to_json(self) -> str:
        """The tokenizer serialized as tokenizer.json (what llguidance reads for structured output)."""
        return str(self._tok.to_str())

    def token_to_id(self, token: str) -> int | None:
        value = self._tok.token_to_id(token)
        return None if value is None else int(value)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))


class _TransformersBackend:
    """A Python tokenizer (tiktoken, sentencepiece) through transformers.AutoTokenizer."""

    def __init__(self, model_dir: Path) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise _no_tokenizer(model_dir) from None
        try:
            self._tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=True)
        except Exception as exc:
            raise ModelFormatError(f"cannot load the tokenizer in {model_dir}: {exc}") from None
        self._bytes_per_token = _bound_from_vocab(self._tok.get_vocab())

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def min_tokens(self, text: str) -> int:
        return len(text.encode("utf-8", "surrogatepass")) // self._bytes_per_token

    def special_tokens(self) -> frozenset[str]:
        return frozenset(str(t) for t in self._tok.all_special_tokens)

    def encode_literal(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False, split_special_tokens=True))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=False))

    def token_to_id(self, token: str) -> int | None:
        value: Any = self._tok.convert_tokens_to_ids(token)
        unk = getattr(self._tok, "unk_token_id", None)
        if not isinstance(value, int) or (value == unk and token != self._tok.unk_token):
            return None
        return value

    @property
    def vocab_size(self) -> int:
        return len(self._tok)


def open_backend(model_dir: Path) -> TokenizerBackend:
    """The backend for whichever tokenizer format ``model_dir`` holds (tokenizer_formats.py)."""
    kind = detect_format(model_dir)
    if kind == "fast":
        return _FastBackend(model_dir / "tokenizer.json")
    if kind == "tiktoken":
        return TiktokenBackend(sorted(model_dir.glob("*.tiktoken"))[0])
    if kind == "sentencepiece":
        return SentencePieceBackend(model_dir / "tokenizer.model")
    if kind == "bpe":
        return _FastBackend(tokenizer=bpe_tokenizer(model_dir))
    if not (model_dir / "tokenizer_config.json").is_file():
        raise _no_tokenizer(model_dir)
    return _TransformersBackend(model_dir)  # a tokenizer that exists only as Python code


def _no_tokenizer(model_dir: Path) -> ModelFormatError:
    return ModelFormatError(
        f"{model_dir} holds no tokenizer: none of tokenizer.json, *.tiktoken, tokenizer.model, "
        "vocab.json + merges.txt",
        hint="install the model's tokenizer files next to the weights "
        "(llm-tpu models pull --tokenizer DIR|URL|catalog-name)",
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path} cannot be read: {exc}") from None
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


@dataclass
class ChatTokenizer:
    """A tokenizer plus what chat needs from its configuration."""

    backend: TokenizerBackend
    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    eos_ids: frozenset[int] = field(default_factory=frozenset)
    source: str = ""

    @classmethod
    def from_dir(cls, model_dir: Path) -> ChatTokenizer:
        """Load from a model directory (tokenizer.json, tokenizer_config.json, generation_config.json)."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelFormatError(f"{model_dir} is not a directory with tokenizer files")
        backend = open_backend(model_dir)
        config = _read_json(model_dir / "tokenizer_config.json")
        template = config.get("chat_template")
        jinja = model_dir / "chat_template.jinja"
        if jinja.is_file():
            template = jinja.read_text(encoding="utf-8")
        if isinstance(template, list):  # named templates: take "default"
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        bos, eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
        eos_ids: set[int] = set()
        if eos is not None and (eid := backend.token_to_id(eos)) is not None:
            eos_ids.add(eid)
        gen = _read_json(model_dir / "generation_config.json")
        raw = gen.get("eos_token_id")
        for value in raw if isinstance(raw, list) else [raw]:
            if isinstance(value, int):
                eos_ids.add(value)
        if isinstance(backend, SentencePieceBackend) and backend.eos_id is not None:
            eos_ids.add(backend.eos_id)  # the model file itself names </s>
        return cls(
            backend=backend,
            chat_template=template if isinstance(template, str) else None,
            bos_token=bos,
            eos_token=eos,
            eos_ids=frozenset(eos_ids),
            source=str(model_dir),
        )

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(ids)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def min_tokens(self, text: str) -> int:
        """At most this many tokens fewer than encode(text) gives; costs one UTF-8 encode, no tokenizing."""
        return self.backend.min_tokens(text)

    def special_tokens(self) -> frozenset[str]:
        """Texts encode() turns into control ids (what content must never produce)."""
        return self.backend.special_tokens()

    def encode_literal(self, text: str) -> list[int]:
        """Encode ``text`` so that control-token text in it stays text."""
        return self.backend.encode_literal(text)

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size
