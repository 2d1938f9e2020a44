"""tui-batch: run batches of prompts through local LLMs, from a terminal dashboard or a script."""

from tui_batch.core import (
    BatchJob,
    BatchProcessor,
    BatchResult,
    GenerationSettings,
    JobStatus,
    ProgressUpdate,
    Prompt,
)

__version__ = "0.1.0"

__all__ = [
    "BatchJob",
    "BatchProcessor",
    "BatchResult",
    "GenerationSettings",
    "JobStatus",
    "Prompt",
    "ProgressUpdate",
    "__version__",
]
