"""The job setup a person used last, remembered between sessions (a small JSON file)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tui_batch.core.paths import config_dir

SETUP_FILE = "last_setup.json"


def setup_path() -> Path:
    return config_dir() / SETUP_FILE


def load_last_setup() -> dict[str, Any]:
    """The remembered setup, or `{}` when there is none or it cannot be read."""
    try:
        data = json.loads(setup_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_last_setup(setup: dict[str, Any]) -> None:
    """Write the setup atomically; failing to remember is not worth an error."""
    path = setup_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".setup.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(setup, out, indent=2)
        os.replace(temp, path)
    except OSError:
        pass
