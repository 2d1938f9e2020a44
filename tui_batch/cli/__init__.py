"""The command line: parses, calls the core, prints (`main` is the `tui-batch` command)."""

from tui_batch.cli.main import main

__all__ = ["main"]
