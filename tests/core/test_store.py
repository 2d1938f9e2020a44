from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_batch.core.errors import CheckpointError
from tui_batch.core.jobs import BatchResult, GenerationSettings, JobStatus
from tui_batch.core.processor import BatchProcessor


def result(index: int, text: str = "ok", success: bool = True) -> BatchResult:
    return BatchResult(
        prompt_index=index,
        prompt=f"p{index}",
        response_text=text,
        tokens_input=3,
        tokens_output=5,
        duration=0.25,
        success=success,
        error_message=None if success else "boom",
    )


def test_default_checkpoint_dir_follows_the_data_dir(data_dir):
    processor = BatchProcessor()
    assert processor.checkpoint_dir == data_dir / "checkpoints"
    job = processor.create_job("m", ["a"])
    assert job.checkpoint_file == str(data_dir / "checkpoints" / f"batch_{job.job_id}.db")


def test_checkpoint_file_is_private(data_dir):
    job = BatchProcessor().create_job("m", ["a", "b"])
    mode = stat.S_IMODE((data_dir / "checkpoints" / f"batch_{job.job_id}.db").stat().st_mode)
    assert mode == 0o600


def test_save_then_load_round_trip(tmp_path):
    processor = BatchProcessor(tmp_path)
    settings = GenerationSettings(
        max_tokens=12, temperature=0.7, seed=3, stop=["\n\n"], system_prompt="be brief"
    )
    job = processor.create_job(
        "model-x",
        ["a", "b", "c"],
        settings=settings,
        error_strategy="threshold:2",
        retries=2,
        checkpoint_every=7,
    )
    job.completed, job.failed, job.status = 1, 1, JobStatus.PAUSED
    processor.save_checkpoint(job, [result(0), result(2, success=False)])
    loaded, results = processor.load_checkpoint(job.checkpoint_file)
    assert loaded.header() == job.header()
    assert [p.text for p in loaded.prompts] == ["a", "b", "c"]
    assert [(r.prompt_index, r.prompt, r.success) for r in results] == [
        (0, "a", True),
        (2, "c", False),
    ]
    assert results[1].error_message == "boom" and results[0].custom_id == "request-0"


def test_a_commit_writes_only_the_new_rows(tmp_path):
    """Saving costs the same at 10,000 results as at 10: no rewrite of earlier rows."""
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", [f"p{i}" for i in range(10_005)])
    processor.save_checkpoint(job, [result(i) for i in range(10_000)])
    with processor.store.writer(job) as writer:
        before = writer._connection.total_changes
        writer.commit(job, [result(i) for i in range(10_000, 10_005)])
        assert writer._connection.total_changes - before == 6  # 5 inserts + the job header


def test_job_ids_that_are_paths_are_refused_before_any_file_access(tmp_path):
    processor = BatchProcessor(tmp_path / "cp")
    (tmp_path / "x.db").write_text("secret")
    for bad in ("../x", "/etc/passwd", "a/b", "", ".hidden", "a" * 65, "x y"):
        with pytest.raises(CheckpointError, match="Invalid job id"):
            processor.load_job(bad)
        with pytest.raises(CheckpointError, match="Invalid job id"):
            processor.create_job("m", ["a"], job_id=bad)


def test_duplicate_job_id_is_an_error(tmp_path):
    processor = BatchProcessor(tmp_path)
    processor.create_job("m", ["a"], job_id="same")
    with pytest.raises(CheckpointError, match="already exists"):
        processor.create_job("m", ["a"], job_id="same")


def test_list_checkpoints_reports_unreadable_files_and_never_crashes(tmp_path):
    processor = BatchProcessor(tmp_path)
    good = processor.create_job("m", ["a", "b"])
    processor.save_checkpoint(good, [result(0)])
    (tmp_path / "batch_garbage.db").write_bytes(b"not a database at all" * 100)
    (tmp_path / "batch_empty.db").write_bytes(b"")
    other = sqlite3.connect(tmp_path / "batch_other.db")
    other.execute("CREATE TABLE t (x)")
    other.close()
    entries = processor.job_summaries()
    assert [e.job_id for e in entries] == [good.job_id]
    assert entries[0].total_prompts == 2 and entries[0].model_id == "m"
    assert entries[0].status is JobStatus.PENDING and not entries[0].finished
    # The guide's listing: dicts, which scripts index.
    (listed,) = processor.list_checkpoints()
    assert listed["job_id"] == good.job_id and listed["checkpoint_file"] == good.checkpoint_file
    assert (listed["total_prompts"], listed["completed"], listed["failed"]) == (2, 0, 0)
    assert listed["status"] == "pending" and listed["resumable"] is True
    unreadable = processor.scan_checkpoints().unreadable
    assert sorted(Path(u.checkpoint_file).name for u in unreadable) == [
        "batch_empty.db",
        "batch_garbage.db",
        "batch_other.db",
    ]
    assert all(u.unreadable for u in unreadable)


def test_loading_a_damaged_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "batch_bad.db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(CheckpointError, match="Unreadable checkpoint"):
        BatchProcessor(tmp_path).load_checkpoint(path)
    with pytest.raises(CheckpointError, match="No checkpoint for job nope"):
        BatchProcessor(tmp_path).load_job("nope")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=40), st.booleans(), st.integers(0, 10**6)), max_size=15))
def test_results_round_trip_exactly(tmp_path_factory, rows):
    processor = BatchProcessor(tmp_path_factory.mktemp("cp"))
    job = processor.create_job("m", [f"p{i}" for i in range(max(1, len(rows)))])
    results = [
        BatchResult(
            prompt_index=i,
            prompt=f"p{i}",
            response_text=text,
            success=ok,
            custom_id=f"request-{i}",
            tokens_output=n,
            error_message=None if ok else text,
        )
        for i, (text, ok, n) in enumerate(rows)
    ]
    processor.save_checkpoint(job, results)
    _, loaded = processor.load_checkpoint(job.checkpoint_file)
    assert [r.to_dict() for r in loaded] == [r.to_dict() for r in results]


def test_no_lock_file_outlives_a_run_and_the_lock_still_holds(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", ["a", "b"])
    with (
        processor.store.lock(job.job_id),
        pytest.raises(CheckpointError, match="already running"),
        processor.store.lock(job.job_id),
    ):
        pass
    processor.process_batch(job, str.upper)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")) == []
    with processor.store.lock(job.job_id):  # taken again after its file went
        assert (tmp_path / f"batch_{job.job_id}.db.lock").exists()
