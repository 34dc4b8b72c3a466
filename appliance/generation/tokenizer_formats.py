"""The tokenizer file formats of the seed model families, without transformers or torch.

| format | files | library | family |
|---|---|---|---|
| fast | ``tokenizer.json`` | tokenizers | Qwen1.5 / Qwen2 / Llama / SmolLM |
| tiktoken | ``qwen.tiktoken`` (base64 token, rank per line) | tiktoken | Qwen-7B / 1.8B / 14B-Chat |
| sentencepiece | ``tokenizer.model`` | sentencepiece | Baichuan2 |
| bpe | ``vocab.json`` + ``merges.txt`` (GPT-2 byte-level BPE) | tokenizers | WizardCoder / StarCoder |

Each backend encodes text and decodes ids the way the family's own Python tokenizer does (Qwen's
``tokenization_qwen.py`` for tiktoken, Baichuan's sentencepiece wrapper, GPT-2's byte-level BPE); the
tests check that against the reference libraries on fixtures they build. Ids the tokenizer does not know
(a bmodel's vocabulary is often padded past the tokenizer's) decode to nothing instead of raising.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance.errors import ModelFormatError

__all__ = [
    "FORMATS",
    "QWEN_PATTERN",
    "QWEN_SPECIAL_TOKENS",
    "SentencePieceBackend",
    "TiktokenBackend",
    "bpe_tokenizer",
    "detect_format",
    "read_tiktoken_ranks",
]

# Qwen's tiktoken pre-tokenizer (tokenization_qwen.py PAT_STR): like cl100k, but one digit at a time.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# Qwen's special tokens, numbered from len(ranks) on: 151643, 151644, 151645, then 205 extras.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    *(f"<|extra_{i}|>" for i in range(205)),
)

FORMATS: tuple[str, ...] = ("fast", "tiktoken", "sentencepiece", "bpe")


def detect_format(model_dir: Path) -> str | None:
    """Which tokenizer format ``model_dir`` holds (the order prefers the most complete description)."""
    if (model_dir / "tokenizer.json").is_file():
        return "fast"
    if any(model_dir.glob("*.tiktoken")):
        return "tiktoken"
    if (model_dir / "tokenizer.model").is_file():
        return "sentencepiece"
    if (model_dir / "vocab.json").is_file() and (model_dir / "merges.txt").is_file():
        return "bpe"
    return None


def _missing_library(name: str, path: Path) -> ModelFormatError:
    return ModelFormatError(
        f"{path} needs the Python package {name!r}, which is not installed",
        hint=f"install it (pip install {name}); the llm-tpu-appliance package depends on it",
    )


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """A ``.tiktoken`` file: one ``<base64 token> <rank>`` per line."""
    ranks: dict[bytes, int] = {}
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ModelFormatError(f"{path} cannot be read: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise ModelFormatError(
                f"{path} line {number} is not '<base64 token> <rank>'",
                hint="the file is damaged: reinstall the model's tokenizer files",
            ) from None
    if not ranks:
        raise ModelFormatError(f"{path} holds no tokens")
    return ranks


class TiktokenBackend:
    """``qwen.tiktoken`` with Qwen's pattern and special tokens (the file has no eos_token)."""

    def __init__(self, path: Path) -> None:
        try:
            import tiktoken
        except ImportError:
            raise _missing_library("tiktoken", path) from None
        ranks = read_tiktoken_ranks(path)
        base = max(ranks.values()) + 1
        self._special = {tok: base + i for i, tok in enumerate(QWEN_SPECIAL_TOKENS)}
        try:
            self._enc = tiktoken.Encoding(
                path.stem, pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens=self._special
            )
        except ValueError as exc:
            raise ModelFormatError(f"{path} is not a usable tiktoken file: {exc}") from None
        self._n = int(self._enc.n_vocab)
        self._by_id = {i: t for t, i in self._special.items()}
        self._max_token_bytes = max(len(b) for b in ranks)

    def encode(self, text: str) -> list[int]:
        # Like the fast backend, special tokens written in the text become their ids (the Jinja and
        # scripted paths rely on it); the built-in templates insert control ids themselves.
        return list(self._enc.encode(text, allowed_special="all"))

    def encode_literal(self, text: str) -> list[int]:
        """``text`` as plain text: special tokens written in it are encoded byte by byte like any text."""
        return list(self._enc.encode(text, allowed_special=set(), disallowed_special=()))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._enc.decode([i for i in ids if 0 <= i < self._n], errors="replace"))

    def token_to_id(self, token: str) -> int | None:
        if token in self._special:
            return self._special[token]
        try:
            return int(self._enc.encode_single_token(token.encode("utf-8")))
        except KeyError:
            return None

    def id_to_token(self, token_id: int) -> str | None:
        if token_id in self._by_id:
            return self._by_id[token_id]
        try:
            return bytes(self._enc.decode_single_token_bytes(token_id)).decode("utf-8")
        except (KeyError, UnicodeDecodeError):  # unknown id, or part of a multi-byte character
            return None

    def special_tokens(self) -> frozenset[str]:
        """The control tokens whose text encode() turns into their ids."""
        return frozenset(self._special)

    def min_tokens(self, text: str) -> int:
        """A lower bound of len(encode(text)): no token covers more bytes than the longest rank."""
        return -(-len(text.encode("utf-8", "surrogatepass")) // self._max_token_bytes)

    @property
    def vocab_size(self) -> int:
        return self._n


class SentencePieceBackend:
    """``tokenizer.model`` (Baichuan2): plain sentencepiece, no bos/eos added (the template adds ids)."""

    def __init__(self, path: Path) -> None:
        try:
            import sentencepiece
        except ImportError:
            raise _missing_library("sentencepiece", path) from None
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.Load(str(path))
        except (OSError, RuntimeError) as exc:
            raise ModelFormatError(
                f"{path} is not a sentencepiece model: {exc}",
                hint="reinstall the model's tokenizer files",
            ) from None
        self._n = int(self._sp.GetPieceSize())
        pieces = [str(self._sp.IdToPiece(i)) for i in range(self._n)]
        # The API does not say which pieces are user-defined (matched whole in text): take the tag-like
        # ones that text encodes to as one piece.
        self._user_defined = frozenset(
            p
            for i, p in enumerate(pieces)
            if len(p) > 2
            and p[0] == "<"
            and p[-1] == ">"
            and not (self._sp.IsControl(i) or self._sp.IsByte(i) or self._sp.IsUnknown(i))
            and list(self._sp.EncodeAsIds(p)) == [i]
        )
        self._max_piece_bytes = max((len(p.encode("utf-8")) for p in pieces), default=1) or 1

    def encode(self, text: str) -> list[int]:
        # Control pieces (<s>, </s>, <reserved_*>) are never matched in text; user-defined ones are.
        return [int(i) for i in self._sp.EncodeAsIds(text)]

    def encode_literal(self, text: str) -> list[int]:
        """``text`` as plain text: a user-defined piece written in it becomes its bytes (byte-fallback
        pieces ``<0xNN>``) instead of the piece itself."""
        out: list[int] = []
        for i in self._sp.EncodeAsIds(text):
            piece = str(self._sp.IdToPiece(int(i)))
            if piece in self._user_defined:
                out += self._bytes_of(piece)
            else:
                out.append(int(i))
        return out

    def _bytes_of(self, piece: str) -> list[int]:
        ids = [int(self._sp.PieceToId(f"<0x{b:02X}>")) for b in piece.encode("utf-8")]
        if all(self._sp.IsByte(i) for i in ids):
            return ids
        return [int(self._sp.unk_id())] * len(piece)  # no byte pieces: never the control piece itself

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._sp.DecodeIds([int(i) for i in ids if 0 <= i < self._n]))

    def token_to_id(self, token: str) -> int | None:
        value = int(self._sp.PieceToId(token))
        return value if self._sp.IdToPiece(value) == token else None

    def id_to_token(self, token_id: int) -> str | None:
        return str(self._sp.IdToPiece(token_id)) if 0 <= token_id < self._n else None

    def special_tokens(self) -> frozenset[str]:
        """The pieces encode() matches as a whole in text (user-defined symbols)."""
        return self._user_defined

    def min_tokens(self, text: str) -> int:
        """A lower bound of len(encode(text)); the slack of 3 covers normalization (NFKC) composing."""
        return len(text.encode("utf-8", "surrogatepass")) // (3 * self._max_piece_bytes)

    @property
    def eos_id(self) -> int | None:
        value = int(self._sp.eos_id())
        return value if value >= 0 else None

    @property
    def vocab_size(self) -> int:
        return self._n


def _special_tokens(model_dir: Path, vocab: dict[str, int]) -> list[str]:
    """Special tokens a vocab+merges directory declares (tokenizer_config, special_tokens_map, added)."""
    found: list[str] = []

    def add(value: Any) -> None:
        text = value.get("content") if isinstance(value, dict) else value
        if isinstance(text, str) and text and text not in found:
            found.append(text)

    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{path} cannot be read: {exc}") from None
        if not isinstance(data, dict):
            continue
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            add(data.get(key))
        for value in data.get("additional_special_tokens") or []:
            add(value)
        decoder = data.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            for value in decoder.values():
                add(value)
    # GPT-2 / StarCoder vocabularies hold their control tokens in vocab.json itself.
    for token in vocab:
        if token.startswith("<|") and token.endswith("|>"):
            add(token)
    return found


def bpe_tokenizer(model_dir: Path) -> Any:
    """A ``tokenizers.Tokenizer`` for GPT-2 style ``vocab.json`` + ``merges.txt`` (byte-level BPE)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab_path, merges_path = model_dir / "vocab.json", model_dir / "merges.txt"
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        model = models.BPE.from_file(str(vocab_path), str(merges_path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{vocab_path} cannot be read: {exc}") from None
    except Exception as exc:  # the library raises plain Exception for malformed files
        raise ModelFormatError(
            f"{model_dir}: vocab.json/merges.txt are not a byte-level BPE: {exc}",
            hint="reinstall the model's tokenizer files",
        ) from None
    if not isinstance(vocab, dict):
        raise ModelFormatError(f"{vocab_path} is not a JSON object of token -> id")
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = _special_tokens(model_dir, vocab)
    if specials:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok
