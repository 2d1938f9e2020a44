"""The core never imports Textual, and importing the package loads no heavy backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    assert "openai" not in modules


def test_core_and_cli_import_without_textual():
    modules = _modules_after(
        "import tui_batch.core, tui_batch.core.processor, tui_batch.core.store, "
        "tui_batch.core.export, tui_batch.core.prompts, tui_batch.cli, tui_batch.cli.arguments, tui_batch.models.catalog"
    )
    assert "textual" not in modules
    assert "llama_cpp" not in modules
    assert "openai" not in modules  # loaded only for a job on servers


def test_no_textual_import_statement_in_core():
    for path in (REPO / "tui_batch" / "core").rglob("*.py"):
        text = path.read_text()
        assert "import textual" not in text and "from textual" not in text, path


def test_import_contracts_hold():
    """The layers of pyproject's [tool.importlinter], checked by import-linter itself."""
    beside = Path(sys.executable).parent / "lint-imports"
    command = str(beside) if beside.exists() else "lint-imports"
    done = subprocess.run([command, "--no-cache"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 kept, 0 broken" in done.stdout


def test_every_module_is_in_a_layer():
    """The layers contract covers the whole package: a new top-level module must find
    its part (cli, ui, backends, models, core) rather than sit beside them."""
    import grimp
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c["layers"] for c in config["contracts"] if c["type"] == "layers")
    graph = grimp.build_graph("tui_batch", cache_dir=None)
    outside = [
        module
        for module in sorted(graph.modules)
        if module != "tui_batch"
        and not any(module == layer or module.startswith(f"{layer}.") for layer in layers)
    ]
    assert outside == []


def test_no_import_cycles():
    """No module of ours imports, directly or not, one that imports it back: a cycle
    means two modules share a concept that needs one home."""
    import grimp

    graph = grimp.build_graph("tui_batch", cache_dir=None)
    cycles = set()
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            # A package's __init__ re-exporting its own submodules is not a cycle.
            if imported.startswith(f"{module}.") or module.startswith(f"{imported}."):
                continue
            if graph.chain_exists(importer=imported, imported=module):
                chain = graph.find_shortest_chain(importer=imported, imported=module)
                cycles.add(" -> ".join((module, *chain)))
    assert not cycles, "\n".join(sorted(cycles))
