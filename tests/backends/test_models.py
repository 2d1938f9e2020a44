from __future__ import annotations

import os
import struct

import pytest

from tui_batch.core.errors import ModelError
from tui_batch.models.catalog import discover_models, resolve_model
from tui_batch.models.gguf import GGUFError, read_gguf_info

from conftest import run_cli


def test_demo_model_metadata(demo_model):
    info = read_gguf_info(demo_model)
    assert (info.architecture, info.quantisation, info.context_length) == ("llama", "Q4_1", 8192)
    assert info.parameters_label == "134.5M" and info.chat_template


def test_models_are_found_in_every_place(tmp_path, data_dir, demo_model, monkeypatch):
    own = data_dir / "models"
    own.mkdir(parents=True)
    (own / "mine.gguf").symlink_to(demo_model)
    extra_a, extra_b = tmp_path / "a", tmp_path / "b" / "nested"
    extra_b.mkdir(parents=True)
    extra_a.mkdir()
    (extra_a / "alpha.gguf").symlink_to(demo_model)
    (extra_b / "beta.gguf").symlink_to(demo_model)
    monkeypatch.setenv("TUI_BATCH_MODELS_DIR", os.pathsep.join([str(extra_a), str(tmp_path / "b")]))
    snapshot = tmp_path / "hf-cache" / "models--org--repo" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "hub-model.Q4_1.gguf").symlink_to(demo_model)

    models = {m.id: m for m in discover_models()}
    assert models["SmolLM2-135M-Instruct.Q4_1"].source == "demo"
    assert models["mine"].source == "data dir"
    assert models["alpha"].source == models["beta"].source == "TUI_BATCH_MODELS_DIR"
    assert models["hub-model.Q4_1"].source == "hf cache"
    assert models["alpha"].gguf.quantisation == "Q4_1"
    assert resolve_model("beta").path == extra_b / "beta.gguf"
    assert resolve_model(str(extra_a / "alpha.gguf")).id == "alpha"
    assert resolve_model(None).source == "demo"


def test_unknown_models_and_damaged_files(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="Unknown model 'nope'"):
        resolve_model("nope")
    with pytest.raises(ModelError, match="Model file not found"):
        resolve_model(str(tmp_path / "gone.gguf"))
    junk = tmp_path / "models"
    junk.mkdir()
    (junk / "junk.gguf").write_bytes(b"not gguf")
    monkeypatch.setenv("TUI_BATCH_MODELS_DIR", str(junk))
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf_info(junk / "junk.gguf")
    listed = {m.id: m for m in discover_models()}
    assert listed["junk"].gguf is None and "not a GGUF file" in listed["junk"].error


def gguf_bytes(*kv: bytes, kv_count: int | None = None) -> bytes:
    """A GGUF header (version 3, no tensors) with these raw key/value records."""
    count = len(kv) if kv_count is None else kv_count
    return b"GGUF" + struct.pack("<IQQ", 3, 0, count) + b"".join(kv)


def key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("huge-key", gguf_bytes(struct.pack("<Q", 2**63) + b"x" * 16)),
        ("huge-count", gguf_bytes(kv_count=2**64 - 1)),
        ("huge-array", gguf_bytes(key("a") + struct.pack("<IIQ", 9, 4, 2**64 - 1))),
        ("deep", gguf_bytes(key("a") + struct.pack("<IIQ", 9, 9, 1) * 5000)),
        ("long-string-array", gguf_bytes(key("a") + struct.pack("<IIQ", 9, 8, 100) + b"\xff" * 8)),
        (
            "dims",
            gguf_bytes().replace(struct.pack("<IQQ", 3, 0, 0), struct.pack("<IQQ", 3, 1, 0))
            + key("t")
            + struct.pack("<I", 2**31),
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_damaged_gguf_headers_are_listed_as_unreadable_not_raised(
    tmp_path, monkeypatch, name, data
):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / f"{name}.gguf").write_bytes(data)
    monkeypatch.setenv("TUI_BATCH_MODELS_DIR", str(folder))
    with pytest.raises(GGUFError, match="damaged GGUF header|past the end"):
        read_gguf_info(folder / f"{name}.gguf")
    listed = {m.id: m for m in discover_models()}
    assert listed[name].gguf is None and listed[name].error
    done = run_cli("models")
    assert done.returncode == 0 and name in done.stdout and "unreadable" in done.stdout
