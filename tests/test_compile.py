"""`llm-tpu models compile` against the vendor's own builds of the tiny-qwen2 fixture: same
`model_tool --info`, same bytes except the create time and the padding two vendor builds differ in.
Plus the checks that come before any work, an interrupted build that resumes, and the install.

These run the real tpuc-opt (a few seconds per build on 2 cores once the PPL kernels are cached).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.compile_builds import (
    LAYOUTS,
    PADDING,
    assert_sample_build_equals_fixture,
    comparable_file,
    compile_layout,
    differing_offsets,
    tool,
)
from support.tiny_llama import CONFIG, write_tiny_llama
from support.vendor_runtime import FIXTURES

from appliance.cli.main import main
from appliance.compile import driver
from appliance.compile.driver import Progress, compile_bmodel
from appliance.compile.plan import BuildOptions
from appliance.compile.source import UnsupportedModel, read_spec
from appliance.compile.toolchain import CompilerMissing, find_toolchain

TIME_LINE = re.compile(r"^create time: .*$", re.M)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    dest = tmp_path_factory.mktemp("compiled")
    for name in LAYOUTS:
        compile_layout(name, dest)
    yield dest


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_model_tool_info_equals_the_fixture_except_create_time(builds: Path, name: str) -> None:
    ours = tool(["--info", str(comparable_file(name, builds))])
    theirs = (FIXTURES / f"{LAYOUTS[name].fixture}.info.txt").read_text()
    assert TIME_LINE.search(ours) and TIME_LINE.sub("", ours) == TIME_LINE.sub("", theirs)


def test_greedy_build_is_byte_identical_except_timestamp_and_padding(builds: Path) -> None:
    fixture = FIXTURES / LAYOUTS["bf16"].fixture
    diff = differing_offsets(comparable_file("bf16", builds), fixture)
    stamp = fixture.read_bytes().find(b"Sat Nov 21 23:18:25 2026")
    assert stamp > 0
    in_stamp = [i for i in diff if stamp <= i < stamp + 24]
    rest = set(diff) - set(in_stamp)
    assert in_stamp, "the create time must differ (it is today's)"
    assert rest <= PADDING["bf16"], f"bytes differ outside the padding: {sorted(rest - PADDING['bf16'])[:20]}"


@pytest.mark.parametrize("name", ["bf16_sample", "w4bf16_sample"])
def test_sample_builds_equal_the_fixture_except_time_and_padding(builds: Path, name: str) -> None:
    assert_sample_build_equals_fixture(name, comparable_file(name, builds))


def test_tiny_llama_tied_without_bias_compiles(tmp_path: Path) -> None:
    src = write_tiny_llama(tmp_path / "llama")
    spec = read_spec(src)
    assert spec.family == "llama" and spec.tied and spec.rope_theta == 10000.0
    res = compile_bmodel(src, BuildOptions("bf16", 64, True), tmp_path / "work", tmp_path / "llama.bmodel")
    info = tool(["--info", str(res.bmodel)])
    nets = re.findall(r"net \d+: \[(\w+)\]", info)
    # tied: lm_head shares the embedding's data, so it is combined after the sized nets
    assert nets == [
        "embedding", "greedy_head", "sample_head", "block_cache_0", "block_cache_1",
        "embedding_cache", "lm_head", "block_0", "block_1",
    ]  # fmt: skip
    assert re.search(r"\[lm_head\].*?output: \S+, \[1, 512\], float32", info, re.S)  # logits over the vocab


def _config_with(tmp_path: Path, **change: object) -> Path:
    src = tmp_path / "model"
    src.mkdir()
    cfg = dict(CONFIG) | change
    (src / "config.json").write_text(json.dumps(cfg))
    return src


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling.rope_type"),
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "rope_parameters.rope_type"),
        ({"architectures": ["MistralForCausalLM"]}, "architectures"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"use_sliding_window": True}, "use_sliding_window"),
        ({"quantization_config": {"quant_method": "gptq"}}, "quantization_config.quant_method"),
    ],
)
def test_unsupported_config_fails_before_compiling_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], field: str
) -> None:
    src = _config_with(tmp_path, **change)
    with pytest.raises(UnsupportedModel, match=re.escape(field)):
        read_spec(src)
    work = tmp_path / "work"
    rc = main(["models", "compile", str(src), "--work-dir", str(work), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "not supported yet" in err and field in err
    assert not work.exists() and not (tmp_path / "out").exists()


def test_missing_compiler_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(CompilerMissing) as exc:
        find_toolchain(tmp_path / "nowhere")
    assert "tpuc-opt" in exc.value.message and exc.value.hint and "fetch-vendor-compiler" in exc.value.hint


def test_too_little_disk_space_is_refused_before_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_tiny_llama(tmp_path / "llama")

    class Usage:
        free = 1000

    # the disk is the boundary here: a real full disk cannot be made safely on a shared machine
    monkeypatch.setattr(driver.shutil, "disk_usage", lambda _p: Usage())
    with pytest.raises(driver.CompileError, match="not enough disk space"):
        compile_bmodel(src, BuildOptions("bf16", 64, False), tmp_path / "work", tmp_path / "x.bmodel")
    assert not list((tmp_path / "work").iterdir())


def test_interrupted_build_leaves_no_output_and_resumes(tmp_path: Path) -> None:
    src = write_tiny_llama(tmp_path / "llama")
    out, work = tmp_path / "out" / "llama.bmodel", tmp_path / "work"
    seen: list[str] = []

    def interrupt_after_two(p: Progress) -> None:
        seen.append(p.net)
        if len(seen) == 2:
            raise KeyboardInterrupt

    opts = BuildOptions("w4bf16", 64, False)
    with pytest.raises(KeyboardInterrupt):
        compile_bmodel(src, opts, work, out, jobs=1, progress=interrupt_after_two)
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))
    done = sorted(p.stem for p in work.glob("*/done/*.bmodel"))
    assert len(done) >= 2 and set(seen) <= set(done)
    events: list[Progress] = []
    res = compile_bmodel(src, opts, work, out, progress=events.append)
    skipped = [e.net for e in events if e.skipped]
    assert sorted(skipped) == done and res.nets_skipped == len(done) and res.nets_compiled == 7 - len(done)
    assert [e.done for e in events] == list(range(1, 8))
    assert out.is_file() and not list(work.iterdir())  # scratch gone once the build is complete
    assert "net 6: [block_1]" in tool(["--info", str(out)])


def test_cli_installs_into_the_store_with_a_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("LLM_TPU_MODELS_DIR", str(store))
    args = ["models", "compile", str(FIXTURES / "hf"), "--quant", "bf16", "--seq", "64", "--name", "tiny"]
    assert main([*args, "--work-dir", str(tmp_path / "w"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["name"] == "tiny" and record["nets_compiled"] == 7
    assert main(["models", "info", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "qwen2" and info["quantization"] == "bf16" and info["max_seq_len"] == 64
    compiled = info["extra"]["compiled"]
    assert compiled["options"] == {"quant": "bf16", "seq": 64, "sample": False, "lm_head": "bf16"}
    assert compiled["tools"]["tpu-mlir"] == "1.30.2" and len(compiled["source_sha256"]) == 64
    roles = {f["path"]: f["role"] for f in info["files"]}
    assert roles["tiny.bmodel"] == "weights" and roles["token_config/tokenizer.json"] == "tokenizer"


@pytest.mark.parametrize(("lm_head", "weight_bytes"), [("int8", 1.0), ("int4", 0.5)])
def test_quantized_lm_head_shrinks_the_bmodel_by_its_weight_bytes(
    builds: Path, tmp_path: Path, lm_head: str, weight_bytes: float
) -> None:
    """The fixture's untied [2048, 64] lm_head, weight-only quantized per group of 64: its bf16 bytes
    give way to the quantized weights plus a bf16 scale and a uint8 zero point per group."""
    opts = BuildOptions("bf16", 64, True, lm_head)
    res = compile_bmodel(FIXTURES / "hf", opts, tmp_path / "work", tmp_path / f"{lm_head}.bmodel")
    info = tool(["--info", str(res.bmodel)])
    assert re.search(r"\[lm_head\].*?output: \S+, \[1, 2048\], float32", info, re.S)
    vocab, hidden, groups = 2048, 64, 1
    saved = vocab * hidden * 2 - (vocab * hidden * weight_bytes + vocab * groups * 3)
    bf16_size = (builds / "bf16_sample.bmodel").stat().st_size
    assert abs((bf16_size - res.bmodel.stat().st_size) - saved) < 4096  # blobs are 4 KiB aligned


def test_lm_head_option_is_checked_before_work(tmp_path: Path) -> None:
    with pytest.raises(driver.InvalidRequest, match="--lm-head 'int2'"):
        compile_bmodel(
            FIXTURES / "hf", BuildOptions("bf16", 64, True, "int2"), tmp_path / "w", tmp_path / "x"
        )
    assert not (tmp_path / "w").exists()
