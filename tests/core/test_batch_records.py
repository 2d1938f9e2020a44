"""A Batch API job's files and batches in its checkpoint: each state committed and read
back by another connection (as after a crash), the prompts answered and never stored,
and a checkpoint without batches read as having none."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_batch.core.batch_records import BatchRecords
from tui_batch.core.processor import BatchProcessor


@pytest.fixture
def checkpoint(tmp_path):
    job = BatchProcessor(tmp_path / "checkpoints").create_job("m", [f"p{i}" for i in range(6)])
    return job.checkpoint_file


def test_a_checkpoint_without_batches_has_none(checkpoint):
    records = BatchRecords(checkpoint)
    assert records.files() == [] and records.unread() == {} and records.stored() == []
    assert records.next_number() == 1 and records.lines_of(1) == {}


def test_each_state_is_committed_and_read_back_after_a_crash(checkpoint):
    records = BatchRecords(checkpoint, clock=lambda: 100.0)
    first = records.next_number()
    records.written(first, [(f"j:{i}:1", i) for i in range(3)])
    second = records.next_number()
    records.written(second, [(f"j:{i}:2", i) for i in range(3, 6)])
    assert (first, second) == (1, 2)
    records.uploaded(first, "file-1")
    records.creating(first)
    records.created(first, "batch-1")
    records.status(first, "in_progress")
    again = BatchRecords(checkpoint)  # another process, after a kill -9
    files = again.files()
    assert [(f.number, f.state, f.file_id, f.batch_id, f.status) for f in files] == [
        (1, "created", "file-1", "batch-1", "in_progress"),
        (2, "written", None, None, None),
    ]
    assert files[0].lines == 3 and files[0].created_at == 100.0 and files[0].in_flight
    assert again.lines_of(first) == {"j:0:1": 0, "j:1:1": 1, "j:2:1": 2}
    assert again.unread() == {}  # nothing ended yet
    again.ended(first, "expired", "file-out", "file-err")
    ended = again.files()[0]
    assert (ended.state, ended.status, ended.output_file_id, ended.error_file_id) == (
        "ended",
        "expired",
        "file-out",
        "file-err",
    )
    assert not ended.in_flight and again.unread() == {0: 1, 1: 1, 2: 1}  # none stored
    assert again.stored() == []


def test_a_file_is_stored_once_each_prompt_has_its_result_or_a_later_line(tmp_path):
    processor = BatchProcessor(tmp_path / "checkpoints")
    job = processor.create_job("m", ["a", "b"])
    records = BatchRecords(job.checkpoint_file)
    records.written(1, [("j:0:1", 0), ("j:1:1", 1)])
    records.ended(1, "completed", "out-1", None)
    records.written(2, [("j:1:2", 1)])  # prompt 1 sent again
    records.ended(2, "expired", None, "err-2")
    assert records.unread() == {0: 1, 1: 2} and records.stored() == []
    processor.process_batch(job, lambda prompt: "answer")  # both results stored
    assert records.unread() == {}
    assert [f.number for f in records.stored()] == [1, 2]
    records.deleted(1)
    assert [f.number for f in records.stored()] == [2] and records.files()[0].deleted


def test_a_file_that_is_not_there_is_said(checkpoint):
    with pytest.raises(KeyError, match="no batch file 7"):
        BatchRecords(checkpoint).uploaded(7, "file-x")


def test_the_job_still_reads_as_before(checkpoint, tmp_path):
    BatchRecords(checkpoint).written(1, [("j:0:1", 0)])
    job_id = Path(checkpoint).stem.removeprefix("batch_")
    job, results = BatchProcessor(tmp_path / "checkpoints").load_job(job_id)
    assert job.total_prompts == 6 and results == []
