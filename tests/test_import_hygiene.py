"""The core never imports Textual, and importing the package loads no heavy backend."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return set(out.split())


def test_package_import_loads_neither_textual_nor_llama_cpp():
    modules = _modules_after("import tui_batch\nfrom tui_batch import BatchProcessor")
    assert "textual" not in modules
    assert "llama_cpp" not in modules


def test_core_and_cli_import_without_textual():
    modules = _modules_after(
        "import tui_batch.core, tui_batch.core.processor, tui_batch.core.store, "
        "tui_batch.core.export, tui_batch.core.prompts, tui_batch.cli, tui_batch.models"
    )
    assert "textual" not in modules
    assert "llama_cpp" not in modules


def test_no_textual_import_statement_in_core():
    for path in (REPO / "tui_batch" / "core").rglob("*.py"):
        text = path.read_text()
        assert "import textual" not in text and "from textual" not in text, path
