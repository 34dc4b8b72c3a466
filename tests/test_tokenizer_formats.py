"""Each seed family's tokenizer format loads without transformers and encodes/decodes exactly like the
reference library on mixed Chinese/English/code text (fixtures built here: tests/support/tokenizer_fixtures.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.tokenizer_fixtures import (
    MIXED_TEXTS,
    bpe_dir,
    sentencepiece_dir,
    tiktoken_dir,
)

from appliance.errors import ModelFormatError
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.tokenizer_formats import QWEN_PATTERN, QWEN_SPECIAL_TOKENS, detect_format


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tokenizers")
    return {
        "tiktoken": tiktoken_dir(base / "qwen"),
        "sentencepiece": sentencepiece_dir(base / "baichuan2"),
        "bpe": bpe_dir(base / "wizardcoder"),
    }


def test_formats_are_detected(dirs: dict[str, Path], tiny_hf: Path) -> None:
    assert {k: detect_format(d) for k, d in dirs.items()} == {k: k for k in dirs}
    assert detect_format(tiny_hf) == "fast"


def test_tiktoken_equals_tiktoken_with_qwens_pattern_and_specials(dirs: dict[str, Path]) -> None:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    path = dirs["tiktoken"] / "qwen.tiktoken"
    ranks = load_tiktoken_bpe(str(path))  # tiktoken's own reader of the rank file
    base = len(ranks)
    reference = tiktoken.Encoding(
        "ref",
        pat_str=QWEN_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={t: base + i for i, t in enumerate(QWEN_SPECIAL_TOKENS)},
    )
    tok = ChatTokenizer.from_dir(dirs["tiktoken"])
    for text in MIXED_TEXTS:
        ids = tok.encode(text)
        assert ids == reference.encode(text, allowed_special="all"), text
        assert tok.decode(ids) == reference.decode(ids) == text
    # Qwen numbers its control tokens after the ranks: 151643/4/5 in the real file.
    assert [tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [
        base,
        base + 1,
        base + 2,
    ]
    assert tok.vocab_size == base + len(QWEN_SPECIAL_TOKENS)
    assert tok.eos_ids == frozenset()  # the tiktoken tokenizer has no eos_token: the template names it
    # digits one at a time (Qwen's pattern), multi-byte text split over tokens still decodes whole
    assert len(tok.encode("2718")) == 4
    assert tok.decode([*tok.encode("天安门"), tok.vocab_size + 5]) == "天安门"  # padded ids are dropped


def test_sentencepiece_equals_sentencepiece(dirs: dict[str, Path]) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(dirs["sentencepiece"] / "tokenizer.model"))
    tok = ChatTokenizer.from_dir(dirs["sentencepiece"])
    for text in MIXED_TEXTS:
        ids = tok.encode(text)
        assert ids == sp.encode(text), text
        assert tok.decode(ids) == sp.decode(ids) == text  # byte fallback: unseen characters survive
    assert tok.encode("龘")[0] == sp.piece_to_id("<0xE9>")  # a character the model never saw: bytes
    assert (tok.token_to_id("<reserved_106>"), tok.token_to_id("<reserved_107>")) == (195, 196)
    assert tok.token_to_id("</s>") == 2 and tok.eos_ids == {2}
    assert tok.token_to_id("<no-such-piece>") is None
    assert 1 not in tok.encode("Hello")  # no bos added: Baichuan2's prompt starts without one


def test_vocab_merges_equals_gpt2_tokenizer(dirs: dict[str, Path]) -> None:
    from transformers import GPT2Tokenizer

    d = dirs["bpe"]
    reference = GPT2Tokenizer.from_pretrained(str(d))  # what transformers makes of the same directory
    tok = ChatTokenizer.from_dir(d)
    for text in [*MIXED_TEXTS, "a<|endoftext|>b"]:
        ids = tok.encode(text)
        assert ids == list(reference.encode(text, add_special_tokens=False)), text
        assert tok.decode(ids) == reference.decode(ids) == text
    assert tok.token_to_id("<|endoftext|>") == 0  # StarCoder's control token is id 0 of vocab.json
    assert tok.encode("a<|endoftext|>b")[1] == 0
    assert tok.eos_ids == {0}


def test_the_device_package_needs_no_transformers(dirs: dict[str, Path]) -> None:
    """Loading every format in a process where transformers (and torch) cannot be imported."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('transformers', 'torch'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from appliance.generation.tokenizer import ChatTokenizer\n"
        "for d in sys.argv[1:]:\n"
        "    t = ChatTokenizer.from_dir(d)\n"
        "    assert t.decode(t.encode('你好 world')) == '你好 world', d\n"
        "print('ok', len(sys.argv) - 1)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, dirs.values())], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok 3"


def test_missing_and_broken_tokenizers_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFormatError, match=r"holds no tokenizer.*tokenizer\.model") as err:
        ChatTokenizer.from_dir(empty)
    assert "--tokenizer" in (err.value.hint or "")
    bad_tik = tmp_path / "tik"
    bad_tik.mkdir()
    (bad_tik / "qwen.tiktoken").write_text("IQ== 0\nnot-base64!! 1\n")
    with pytest.raises(ModelFormatError, match="line 2"):
        ChatTokenizer.from_dir(bad_tik)
    bad_sp = tmp_path / "sp"
    bad_sp.mkdir()
    (bad_sp / "tokenizer.model").write_bytes(b"\x00garbage")
    with pytest.raises(ModelFormatError, match="not a sentencepiece model"):
        ChatTokenizer.from_dir(bad_sp)
    bad_bpe = tmp_path / "bpe"
    bad_bpe.mkdir()
    (bad_bpe / "vocab.json").write_text('{"a": 0}')
    (bad_bpe / "merges.txt").write_text("#version: 0.2\nx y\n")
    with pytest.raises(ModelFormatError, match=r"vocab\.json/merges\.txt"):
        ChatTokenizer.from_dir(bad_bpe)


def test_backends_know_their_control_tokens_and_bound_token_counts(dirs: dict[str, Path]) -> None:
    """What the content-is-text mechanism and the cheap prompt-size check need from every backend."""
    tik = ChatTokenizer.from_dir(dirs["tiktoken"]).backend
    sp = ChatTokenizer.from_dir(dirs["sentencepiece"]).backend
    for backend in (tik, sp):
        for text in MIXED_TEXTS:
            assert backend.min_tokens(text) <= len(backend.encode(text)), (type(backend).__name__, text)
    im_end = tik.token_to_id("<|im_end|>")
    assert im_end is not None and tik.id_to_token(im_end) == "<|im_end|>"
    assert "<|im_start|>" in tik.special_tokens() and len(tik.special_tokens()) == len(QWEN_SPECIAL_TOKENS)
    assert tik.id_to_token(tik.vocab_size + 1) is None
    assert (sp.id_to_token(195), sp.id_to_token(2)) == ("<reserved_106>", "</s>")
    assert sp.special_tokens() == frozenset()  # control pieces are never matched in text
