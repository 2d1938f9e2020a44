"""Where tui-batch keeps its files: one data directory, overridable for tests."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "tui-batch"
DATA_DIR_ENV = "TUI_BATCH_DATA_DIR"
CACHE_ENV = "TUI_BATCH_CACHE"


def data_dir() -> Path:
    """The data directory: `TUI_BATCH_DATA_DIR`, else the platform's user data dir."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    """Remembered settings: in the data dir when `TUI_BATCH_DATA_DIR` is set, else the
    platform's user config dir."""
    if os.environ.get(DATA_DIR_ENV):
        return data_dir() / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def checkpoint_dir() -> Path:
    return data_dir() / "checkpoints"


def outputs_dir() -> Path:
    return data_dir() / "outputs"


def cache_path() -> Path:
    """The answer cache: `TUI_BATCH_CACHE` (a file several people may share), else
    `cache.db` in the data dir."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return data_dir() / "cache.db"


def models_dir() -> Path:
    return data_dir() / "models"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by the owner only; checkpoints hold user data."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def is_file(path: str | Path) -> bool:
    """Whether `path` names a regular file; False for text that cannot be a path at all
    (too long for the OS, a NUL byte in it), where `Path.is_file` raises: a value that may
    be a path or inline text (a schema, a short form) is asked this."""
    try:
        return Path(path).expanduser().is_file()
    except (OSError, ValueError):
        return False


def exists(path: str | Path) -> bool:
    """`Path.exists`, False where the text cannot be a path (see `is_file`)."""
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError):
        return False
