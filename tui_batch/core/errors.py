"""Errors a user can cause. Each carries a message a person can act on."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class TuiBatchError(Exception):
    """Base class for errors caused by input, files or settings, not by bugs."""


class PromptFileError(TuiBatchError):
    """A prompts file is missing, unreadable or malformed."""


class CheckpointError(TuiBatchError):
    """A checkpoint is missing, unreadable, or a job id is invalid."""


class ExportError(TuiBatchError):
    """Results could not be written in the requested format."""


class ModelError(TuiBatchError):
    """A model could not be found or loaded."""


class SettingsError(TuiBatchError):
    """A job setting (error strategy, retries, ...) is out of range."""


class ServerError(TuiBatchError):
    """A server cannot be used: unreachable, refusing the key, or not serving the model."""


class TemplateError(TuiBatchError):
    """A prompt template cannot be compiled, or cannot be filled from a record."""


class DataFileError(TuiBatchError):
    """A data file for a template is missing, unreadable or malformed."""


class CacheError(TuiBatchError):
    """The answer cache cannot be read or written (damaged, made by a newer version,
    locked too long by another job); a job then runs without it."""


class JobFileError(TuiBatchError):
    """A job file is missing, unreadable, or holds an unknown key or a wrong value."""


@contextmanager
def reading(path: Path, what: str, error: type[TuiBatchError]) -> Iterator[None]:
    """Turn the OS's errors while reading `path` into `error`, worded for a person:
    "Prompts file not found: ...", "Cannot read data file ...: Permission denied".
    Only a regular file is read: a FIFO or a device (`/dev/zero`) would never end."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode) and not stat.S_ISDIR(os.stat(path).st_mode):
            raise error(f"{what.capitalize()} is not a regular file (a pipe or a device?): {path}")
        yield
    except FileNotFoundError:
        raise error(f"{what.capitalize()} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what.capitalize()} path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise error(f"Cannot read {what} {path}: {exc.strerror or exc}") from None


def read_utf8(path: Path, what: str, error: type[TuiBatchError]) -> str:
    """The text of UTF-8 file `path` (a byte-order mark dropped); `error` worded for a
    person if it is missing, unreadable or not UTF-8."""
    with reading(path, what, error):
        data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
