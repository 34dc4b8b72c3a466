"""Tiny tokenizers in each seed family's file format, built by the tests with the reference trainers.

- ``bpe_dir``: a GPT-2 byte-level BPE trained by ``tokenizers`` on a few mixed lines, saved the way
  WizardCoder ships it (``vocab.json`` + ``merges.txt``, ``<|endoftext|>`` = id 0).
- ``tiktoken_dir``: the same merges as a ``qwen.tiktoken`` rank file (base64 bytes, rank), as Qwen-7B
  ships it; Qwen's special tokens follow the ranks.
- ``sentencepiece_dir``: a ``tokenizer.model`` trained by the sentencepiece trainer (BPE, byte fallback,
  no dummy prefix, like Baichuan2's), with ``<reserved_106>``/``<reserved_107>`` at Baichuan2's ids
  195/196 and ``</s>`` at 2.

Nothing is downloaded; each builder takes well under a second.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

CORPUS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "你好，世界！今天天气很好，我们去公园散步吧。",
    "def add(a, b):\n    return a + b  # 加法\n",
    "for i in range(10):\n    print(f'{i}: {i * i}')\n",
    "人工智能芯片 BM1684X 运行大语言模型，速度很快。",
    "SELECT name, age FROM users WHERE age > 18 ORDER BY name;",
    "The answer is 42. 答案是四十二。Numbers: 3.14159, 2718, 1e-9.",
    "class Tokenizer:\n    def encode(self, text: str) -> list[int]: ...\n",
    "import numpy as np\nx = np.zeros((2, 3), dtype=np.float32)\n",
    "我爱北京天安门，天安门上太阳升。",
    "Emoji and symbols: 🚀 ✓ → ≤ ≥ « » — “quotes” ‘single’",
]

MIXED_TEXTS = [
    "你好，世界! Hello world.",
    "def f(x):\n    return x ** 2  # 平方\n",
    "BM1684X 芯片上的 qwen-7b 模型 runs at 7.2 tok/s 😀",
    "  leading spaces, tabs\tand\nnewlines\n\n",
    "未见过的字：龘靐齉爩 and unseen words: xylophone zephyr",
    "<|im_end|> is text here, 还有 <reserved_106>",
    "",
]


def _bytes_of(token: str) -> bytes:
    table = _byte_table()
    return bytes(table[ch] for ch in token)


def _byte_table() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: printable bytes map to themselves, the rest to 256+n."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def bpe_dir(directory: Path, vocab_size: int = 700) -> Path:
    """vocab.json + merges.txt + tokenizer_config.json (WizardCoder's layout)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    tok.model.save(str(directory))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "add_prefix_space": False})
    )
    return directory


def tiktoken_dir(directory: Path) -> Path:
    """qwen.tiktoken from the BPE's merges (ranks in merge order, the 256 bytes first)."""
    src = bpe_dir(directory / ".bpe")
    vocab: dict[str, int] = json.loads((src / "vocab.json").read_text(encoding="utf-8"))
    ordered = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t != "<|endoftext|>"]
    lines = [f"{base64.b64encode(_bytes_of(t)).decode()} {rank}" for rank, t in enumerate(ordered)]
    (directory / "qwen.tiktoken").write_text("\n".join(lines) + "\n")
    return directory


def sentencepiece_dir(directory: Path, vocab_size: int = 900) -> Path:
    """tokenizer.model trained by sentencepiece (Baichuan2's settings, reserved ids 195/196)."""
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(line.replace("\n", " ") for line in CORPUS * 3) + "\n", encoding="utf-8")
    # unk 0, <s> 1, </s> 2, then control symbols: 86 fillers put <reserved_106> at 3 + 86 + 106 = 195.
    controls = [f"<unused_{i}>" for i in range(86)] + [f"<reserved_{i}>" for i in range(108)]
    spm.SentencePieceTrainer.Train(
        input=str(corpus),
        model_prefix=str(directory / "tokenizer"),
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        character_coverage=1.0,
        control_symbols=controls,
        hard_vocab_limit=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    corpus.unlink()
    (directory / "tokenizer.vocab").unlink()
    return directory
