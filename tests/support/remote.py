"""Helpers for the server tests: settings for URLs, a job run on them, waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tui_batch.backends.remote.backend import RemoteBackend
from tui_batch.core.jobs import BatchJob, BatchResult
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.servers import ServerSettings, parse_endpoint


def settings(*urls: str, **values) -> ServerSettings:
    return ServerSettings(tuple(parse_endpoint(u) for u in urls), **values)


def run(
    tmp_path: Path,
    server: ServerSettings,
    prompts: Sequence[str] | int,
    *,
    retries: int = 3,
    backoff: float = 0.05,
    **job: object,
) -> tuple[BatchJob, list[BatchResult], RemoteBackend]:
    texts = [f"prompt {i}" for i in range(prompts)] if isinstance(prompts, int) else prompts
    processor = BatchProcessor(tmp_path / "checkpoints")
    batch = processor.create_job(
        "fake-model", texts, server=server, retries=retries, retry_backoff=backoff, **job
    )
    backend = RemoteBackend(server, "fake-model")
    with backend:
        results = processor.process_batch(batch, backend)
    return batch, results, backend


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def in_thread(processor: BatchProcessor, job: BatchJob, backend, **events) -> threading.Thread:
    """`process_batch` running in a thread of its own, as a dashboard runs it."""
    runner = threading.Thread(target=processor.process_batch, args=(job, backend), kwargs=events)
    runner.start()
    return runner
