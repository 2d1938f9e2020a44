"""Errors a user can cause. Each carries a message a person can act on."""

from __future__ import annotations


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
