"""`llm-tpu models compile X.gguf`: a GGUF (dequantized on the way, as the embedded model is) builds the
same bmodel as the Hugging Face directory holding the same weights.

The GGUFs are written by the tests themselves in llama.cpp's layout (tests/support/tiny_gguf.py): the
tiny-qwen2 fixture in BF16 (its bmodel must then equal the vendor's fixture build), and a random tiny
Llama with tied embeddings, Q8_0 matrices and llama.cpp's q/k row permutation.
"""

from __future__ import annotations

import json
import re
import shutil
from itertools import pairwise
from pathlib import Path

import gguf
import numpy as np
import pytest
from support.compile_builds import assert_sample_build_equals_fixture, command_ranges, described, tool
from support.tiny_gguf import as_stored, write_gguf
from support.tiny_llama import write_tiny_llama
from support.vendor_runtime import FIXTURES

from appliance.cli.main import main
from appliance.compile.driver import compile_bmodel
from appliance.compile.plan import BuildOptions
from appliance.compile.source import Checkpoint, read_spec
from appliance.compile.sources import resolve_source
from appliance.generation.tokenizer import ChatTokenizer
from appliance.models.directory import find_tokenizer_dir

CREATE_TIME = re.compile(rb"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}")
TEXT = "Hello, world! 你好，世界 def f(x): return x ** 2"


def test_qwen2_gguf_compiles_to_the_vendors_build_of_the_same_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_gguf(FIXTURES / "hf", tmp_path / "tiny-qwen2.gguf", gguf.GGMLQuantizationType.BF16)
    out = tmp_path / "models" / "tiny-gguf"
    args = ["models", "compile", str(src), "--quant", "bf16", "--seq", "64", "--sample", "-o", str(out)]
    assert main([*args, "--work-dir", str(tmp_path / "work"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["nets_compiled"] == 9 and record["path"] == str(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == f"gguf:{src}" and manifest["family"] == "qwen2"
    ours = tmp_path / "nokernel.bmodel"
    shutil.copyfile(out / "tiny-gguf.bmodel", ours)
    tool(["--kernel_remove", str(ours)])
    assert_sample_build_equals_fixture("bf16_sample", ours)
    # the tokenizer came through the GGUF too, and splits text as the original does
    tok_dir = find_tokenizer_dir(out)
    assert tok_dir is not None
    original = ChatTokenizer.from_dir(FIXTURES / "hf")
    assert ChatTokenizer.from_dir(tok_dir).encode(TEXT) == original.encode(TEXT)


def test_llama_q8_0_gguf_equals_its_weights_as_a_directory(tmp_path: Path) -> None:
    hf = write_tiny_llama(tmp_path / "llama", vocab_size=2048)
    shutil.copy(FIXTURES / "hf" / "tokenizer.json", hf)  # a GGUF carries its tokenizer
    q8 = gguf.GGMLQuantizationType.Q8_0
    src = write_gguf(hf, tmp_path / "llama.gguf", q8)
    same = as_stored(hf, tmp_path / "as-stored", q8)  # what a GGUF reader dequantizes, as a directory
    converted, _ = resolve_source(str(src))
    assert read_spec(converted) == read_spec(same)
    a, b = Checkpoint(converted), Checkpoint(same)
    # q/k rows are back in Hugging Face order (llama.cpp interleaves them for its rope)
    assert all(np.array_equal(a.read(n), b.read(n)) for n in b.names())
    assert not np.array_equal(
        b.read("model.layers.0.self_attn.q_proj.weight"),
        Checkpoint(hf).read("model.layers.0.self_attn.q_proj.weight"),
    )
    opts = BuildOptions("bf16", 64, False)
    ours = compile_bmodel(converted, opts, tmp_path / "work", tmp_path / "gguf.bmodel").bmodel.read_bytes()
    theirs = compile_bmodel(same, opts, tmp_path / "work", tmp_path / "dir.bmodel").bmodel.read_bytes()
    assert described(tmp_path / "gguf.bmodel") == described(tmp_path / "dir.bmodel")
    stamp = CREATE_TIME.search(theirs)
    assert stamp is not None and len(ours) == len(theirs)
    holes = [i for i in range(len(ours)) if ours[i] != theirs[i] and i not in range(*stamp.span())]
    # weights equal; at most one 3-byte hole the tools leave uninitialised in an instruction stream
    # (two builds from the same directory differ there too)
    assert len(holes) <= 3 and all(b - a == 1 for a, b in pairwise(holes)), holes
    commands = command_ranges(tmp_path / "dir.bmodel")
    assert all(any(i in r for r in commands) for i in holes), holes
