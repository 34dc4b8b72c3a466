"""The one model-directory module (roles, manifests) and the crash-safe directory helpers it relies on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from appliance.atomic import remove_stale_staging, sha256_file, staged_directory
from appliance.errors import ModelFormatError
from appliance.models.directory import build_manifest, file_role, hf_directory_manifest


def test_one_role_rule() -> None:
    assert file_role("model.bmodel") == "weights"
    assert file_role("model-00001-of-00002.safetensors") == "weights"
    assert file_role("config.json") == "config"
    assert file_role("token_config/config.json") == "config"
    assert file_role("qwen.tiktoken") == "tokenizer"
    assert file_role("token_config/added_tokens.txt") == "tokenizer"
    assert file_role("README.md") == "other"


def test_staged_directory_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    dest = tmp_path / "m"
    with staged_directory(dest) as staging:
        (staging / "a").write_text("one")
    assert (dest / "a").read_text() == "one"
    with pytest.raises(RuntimeError), staged_directory(dest) as staging:
        (staging / "a").write_text("two")
        raise RuntimeError("interrupted")
    assert (dest / "a").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with staged_directory(dest) as staging:  # replaces an existing directory
        (staging / "b").write_text("two")
    assert sorted(p.name for p in dest.iterdir()) == ["b"]
    (tmp_path / ".staging-m-crashed").mkdir()
    remove_stale_staging(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_build_manifest_checksums_every_file(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"w" * 3000)
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / ".hidden").write_text("x")
    m = build_manifest(tmp_path, "m", source="here", fields={"engine": "host"})
    assert [(f.path, f.role) for f in m.files] == [
        ("model.safetensors", "weights"),
        ("tokenizer.json", "tokenizer"),
    ]
    assert (
        m.files[0].sha256
        == hashlib.sha256(b"w" * 3000).hexdigest()
        == sha256_file(tmp_path / "model.safetensors")
    )
    assert m.checksum and m.extra["tokenizer_dir"] == "."
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelFormatError, match="holds no weights"):
        build_manifest(tmp_path, "m", source="here")


def test_hf_directory_without_safetensors_takes_bin_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "qwen2", "max_position_embeddings": 4096}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    m = hf_directory_manifest(tmp_path)
    assert (m.family, m.max_seq_len, [f.path for f in m.weights]) == ("qwen2", 4096, ["pytorch_model.bin"])
