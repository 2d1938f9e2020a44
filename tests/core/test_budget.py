"""A job's budget: it stops before a prompt that could cross it, says why, and resumes."""

from __future__ import annotations

import pytest

from tui_batch.core.backend import CallableBackend
from tui_batch.core.budget import Budget
from tui_batch.core.errors import SettingsError
from tui_batch.core.jobs import JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.stats import job_stats


def server_like(prompt: str) -> dict:
    """Counts as a server sends them: fewer input tokens than bytes, 5 out."""
    return {"response_text": "ok", "tokens_input": len(prompt) // 4 + 12, "tokens_output": 5}


def test_a_cost_budget_is_never_crossed_and_a_resume_with_more_finishes(tmp_path):
    spec = RunSpec.from_values(
        {"max_tokens": 5, "price_in": "1000", "price_out": "2000", "max_cost": "1.5"}
    )
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", [f"prompt number {i} " * 4 for i in range(60)], spec=spec)
    seen = []
    processor.process_batch(job, CallableBackend(server_like), on_event=seen.append)
    assert job.status is JobStatus.CANCELLED
    stats = job_stats(job.checkpoint_file, job.prices)
    assert 0 < stats.done < 60 and stats.cost["total"] <= 1.5
    reasons = [e.reason for e in seen if getattr(e, "reason", None)]
    assert reasons[-1].startswith("budget reached: ") and "of 1.5 spent" in reasons[-1]
    job.budget = Budget(max_cost=100.0)
    processor.process_batch(job, CallableBackend(server_like))
    assert job.status is JobStatus.COMPLETED and job.completed == 60


def test_a_budget_is_kept_in_the_job_and_checked_when_given():
    spec = RunSpec.from_values({"max_total_tokens": "500"})
    assert spec.budget == Budget(max_total_tokens=500)
    assert RunSpec.from_values(spec.to_values()).budget == spec.budget
    with pytest.raises(SettingsError, match="needs what tokens cost"):
        RunSpec.from_values({"max_cost": "2"})
    with pytest.raises(SettingsError, match="Max total tokens: must be at least 1"):
        RunSpec.from_values({"max_total_tokens": "0"})
