"""The batch engine. Never imports Textual or llama_cpp (tests/test_import_hygiene.py)."""

from tui_batch.core.errors import (
    CheckpointError,
    ExportError,
    ModelError,
    PromptFileError,
    SettingsError,
    TuiBatchError,
)
from tui_batch.core.jobs import BatchJob, BatchResult, GenerationSettings, JobStatus, Prompt
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.progress import ProgressUpdate

__all__ = [
    "BatchJob",
    "BatchProcessor",
    "BatchResult",
    "CheckpointError",
    "ExportError",
    "GenerationSettings",
    "JobStatus",
    "ModelError",
    "Prompt",
    "ProgressUpdate",
    "PromptFileError",
    "SettingsError",
    "TuiBatchError",
]
