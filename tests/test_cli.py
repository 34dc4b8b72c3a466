"""The `llm-tpu` command as a user runs it: real subprocesses, real models, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

LLM_TPU = [sys.executable, "-m", "appliance.cli.main"]


def llm_tpu(*args: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LLM_TPU, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], rc: int, match: str) -> None:
    assert proc.returncode == rc, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and match in proc.stderr


def test_ask_json_on_fixture(tiny_hf: Path) -> None:
    proc = llm_tpu("ask", "--model", str(tiny_hf), "-n", "5", "--seed", "1", "--json", "Hi, Ada!")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["usage"]["completion_tokens"] == 5
    assert record["usage"]["prompt_tokens"] > 5
    assert record["done_reason"] == "length"
    assert record["timings"]["eval_count"] == 5 and record["timings"]["time_to_first_token"] > 0


def test_ask_streams_text(tiny_hf: Path) -> None:
    proc = llm_tpu("ask", "--model", str(tiny_hf), "-n", "6", "-t", "0.8", "--seed", "3", "Hi")
    again = llm_tpu("ask", "--model", str(tiny_hf), "-n", "6", "-t", "0.8", "--seed", "3", "Hi")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and proc.stdout == again.stdout


def test_chat_reads_stdin_and_keeps_history(tiny_hf: Path) -> None:
    proc = llm_tpu(
        "chat",
        "--model",
        str(tiny_hf),
        "-n",
        "4",
        "--greedy",
        stdin="Hi, Ada!\n/reset\nCity quiet train.\n/exit\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert len([line for line in proc.stdout.splitlines() if line.strip()]) == 2
    assert "(new conversation)" in proc.stderr


def test_unknown_model(tmp_path: Path) -> None:
    assert_clean_error(llm_tpu("ask", "--model", "no-such-model", "hi"), 2, "no model named 'no-such-model'")
    assert_clean_error(llm_tpu("models", "info", str(tmp_path / "missing")), 2, "does not exist")


def test_corrupt_model_files(tmp_path: Path, tiny_hf: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_hf.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    assert_clean_error(llm_tpu("ask", "--model", str(broken), "hi"), 1, "cannot load the model")
    (broken / "tokenizer.json").write_text("{")
    assert_clean_error(llm_tpu("ask", "--model", str(broken), "hi"), 2, "not a valid tokenizer")
    (tmp_path / "empty").mkdir()
    assert_clean_error(llm_tpu("ask", "--model", str(tmp_path / "empty"), "hi"), 2, "not a model directory")


def test_bad_options() -> None:
    assert_clean_error(llm_tpu("ask", "--top-p", "0", "hi"), 2, "top_p")


def test_models_info_and_list(tiny_hf: Path) -> None:
    proc = llm_tpu("models", "info", str(tiny_hf), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["family"] == "qwen2" and info["max_seq_len"] == 128 and info["engine"] == "host"
    listed = json.loads(llm_tpu("models", "list", "--json").stdout)
    assert listed["models"] == [] and listed["embedded"] is True


def test_a_named_command_imports_only_its_own_module() -> None:
    """`llm-tpu serve` starts without the HTTP client, the compiler, the other commands or requests."""
    code = (
        "import sys; from appliance.cli.main import build_parser, requested_command; "
        "build_parser(requested_command(['-vv', 'serve', '--socket', 'x'])); "
        "print(sorted(m for m in sys.modules if m.startswith(('appliance.cli.', 'appliance.client', "
        "'appliance.compile', 'httpx', 'requests'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == [
        "['appliance.cli.main',",
        "'appliance.cli.options',",
        "'appliance.cli.serve_cmd']",
    ]


def test_help_and_unknown_commands_still_list_every_command() -> None:
    help_text = llm_tpu("--help").stdout
    assert all(f"    {name} " in help_text for name in ("chat", "serve", "provision", "models"))
    # help asked before the command is the whole program's help, not the command's
    assert "provision" in llm_tpu("-h", "serve").stdout
    misspelt = llm_tpu("-v", "serv")
    assert (
        misspelt.returncode == 2 and "'provision'" in misspelt.stderr and "Traceback" not in misspelt.stderr
    )


def test_version_json() -> None:
    data = json.loads(llm_tpu("version", "--json").stdout)
    assert data["llm-tpu-appliance"] and data["python"]


def test_bench_json(tiny_hf: Path) -> None:
    proc = llm_tpu(
        "bench",
        "--model",
        str(tiny_hf),
        "--prompt-tokens",
        "8,24",
        "--gen-tokens",
        "4",
        "--repeat",
        "1",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [r["new_tokens"] for r in rows] == [4, 4]
    assert rows[0]["prompt_tokens"] < rows[1]["prompt_tokens"]
    turns = json.loads(
        llm_tpu(
            "bench",
            "--model",
            str(tiny_hf),
            "--turns",
            "3",
            "--user-tokens",
            "6",
            "--gen-tokens",
            "3",
            "--json",
        ).stdout
    )["turns"]
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert all(t["prefilled_tokens"] < t["prompt_tokens"] for t in turns[1:])  # prefix reuse at work


@pytest.mark.timeout(900)
def test_embedded_default_model_answers() -> None:
    """The README's first path: no --model, the SmolLM2 wheel's GGUF converted once, then cached."""
    proc = llm_tpu("ask", "-n", "12", "--greedy", "--json", "What is the capital of France?", timeout=600)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert "Paris" in record["response"]
    assert record["model"] == "smollm2-135m-instruct"
    second = llm_tpu("ask", "-n", "12", "--greedy", "--json", "What is the capital of France?")
    again = json.loads(second.stdout)
    assert again["response"] == record["response"]
    assert again["timings"]["load_duration"] < record["timings"]["load_duration"]  # the conversion is cached


@pytest.mark.cmodel
def test_ask_on_bmodels_through_the_cmodel(reference: dict[str, Any]) -> None:
    """The device path as a user runs it: `ask --model X.bmodel`, on the vendor runtime (cmodel).

    The p40 reference prompt is exactly the chat template around its text, so the answer must be the
    torch reference tokens, from the fused-greedy build and from the encrypted sample build (with the
    fixture's cipher library). Without a TPU, `auto` refuses a bmodel with a hint.
    """
    from support.vendor_runtime import FIXTURES, cmodel_libdir, require_vendor_runtime

    require_vendor_runtime()
    prompt = reference["prompts"][2]
    question = prompt["text"].split("user\n")[1].split("<|im_end|>")[0]
    want = Tokenizer.from_file(str(FIXTURES / "hf" / "tokenizer.json")).decode(prompt["torch_f32"]["tokens"])
    greedy = str(FIXTURES / "tiny-qwen2_bf16_seq64_1dev.bmodel")
    encrypted = str(FIXTURES / "tiny-qwen2_bf16_seq64_1dev_sample_nokernel_encrypted_block0_cache0.bmodel")
    refused = llm_tpu("ask", "--model", greedy, "hi")
    assert_clean_error(refused, 1, "has no TPU")
    assert "LLM_TPU_BMRT_LIBDIR" in refused.stderr
    libdir = ("--engine", "bmrt", "--libdir", str(cmodel_libdir()))
    locked = llm_tpu("ask", "--model", encrypted, *libdir, "hi")
    assert_clean_error(locked, 2, "encrypted bmodel")
    assert "--decrypt-lib" in locked.stderr
    for extra in ((), ("--model", encrypted, "--decrypt-lib", str(FIXTURES / "cipher_xor.so"))):
        args = ("--model", greedy, *libdir, *extra)  # a later --model wins
        proc = llm_tpu("ask", *args, "-n", "8", "--greedy", "--json", question)
        assert proc.returncode == 0, proc.stderr
        record = json.loads(proc.stdout)  # stdout holds only our JSON: the simulator's chatter is diverted
        assert record["response"] == want, extra
        assert record["usage"]["prompt_tokens"] == len(prompt["ids"])


def test_models_info_tells_the_vocab_of_a_fused_greedy_bmodel() -> None:
    """The greedy lm_head outputs a token id: the vocabulary comes from its weights (2048 x 64 bf16)."""
    bmodel = Path(__file__).parent / "fixtures" / "tiny-qwen2" / "tiny-qwen2_bf16_seq64_1dev.bmodel"
    proc = llm_tpu("models", "info", str(bmodel), "--json")
    assert proc.returncode == 0, proc.stderr
    llm = json.loads(proc.stdout)["llm"]
    assert llm["lm_head"] == "greedy" and llm["vocab"] == 2048 and llm["vocab_source"] == "lm_head weights"
    assert "vocab 2048" in llm_tpu("models", "info", str(bmodel)).stdout
