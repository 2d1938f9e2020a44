"""Completing file paths as they are typed (right arrow accepts the suggestion)."""

from __future__ import annotations

import os
from pathlib import Path

from textual.suggester import Suggester

from tui_batch.core.prompts import SUPPORTED_EXTENSIONS


class PathSuggester(Suggester):
    """Suggests the first folder or prompts file that completes what was typed."""

    def __init__(self, extensions: tuple[str, ...] = SUPPORTED_EXTENSIONS) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.extensions = extensions

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        typed = os.path.expanduser(value)
        folder, prefix = os.path.split(typed)
        try:
            entries = sorted(os.scandir(folder or "."), key=lambda e: e.name)
        except OSError:
            return None
        for entry in entries:
            if not entry.name.startswith(prefix) or entry.name == prefix:
                continue
            if entry.name.startswith(".") and not prefix.startswith("."):
                continue
            if entry.is_dir():
                return value + entry.name[len(prefix) :] + os.sep
            if Path(entry.name).suffix.lower() in self.extensions:
                return value + entry.name[len(prefix) :]
        return None


def display_path(path: str | Path) -> str:
    """A path as a field shows it: relative to the working folder when under it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)
