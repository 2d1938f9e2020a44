"""Joining the shards of a job: the order and answers of the whole, and every refusal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tui_batch.core.backend import CallableBackend
from tui_batch.core.errors import CheckpointError
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompt_stream import first_chunk, open_stream
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.stats import job_stats
from tui_batch.core.stats_text import stats_lines
from tui_batch.core.stored import StoredResults

ANSWER = CallableBackend(lambda prompt: {"response_text": prompt.upper()})


def shard(processor: BatchProcessor, values: dict, run: bool = True) -> str:
    spec = RunSpec.from_values(values)
    stream = open_stream(spec, spec.input_slice)
    job = processor.create_streamed_job("instant", stream, first_chunk(stream), spec)
    if run:
        processor.run_streamed(job, ANSWER, stream=stream)
    return job.job_id


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(f'{{"prompt": "q{i}", "id": "x{i}"}}\n' for i in range(1, 12_001)))
    return path


def test_shards_merged_are_the_whole_job_in_its_order(tmp_path, prompts):
    processor = BatchProcessor(tmp_path / "checkpoints")
    ids = [shard(processor, {"prompts": prompts, "shard": f"{i}/3"}) for i in (3, 1, 2)]
    job = processor.merge_shards(ids, "all of it")
    rows = list(StoredResults(job.checkpoint_file, job.prompts))
    assert [r.prompt for r in rows] == [f"q{i}" for i in range(1, 12_001)]
    assert [r.custom_id for r in rows[:3]] == ["x1", "x2", "x3"]
    assert all(r.response_text == r.prompt.upper() for r in rows)
    assert job.merged_from == [ids[1], ids[2], ids[0]] and job.input_slice is None
    stats = job_stats(job.checkpoint_file)
    assert stats.completed == 12_000
    assert f"  merged     from 3 shards: {', '.join(job.merged_from)}" in stats_lines(stats)
    shard_stats = stats_lines(job_stats(processor.store.path_for(ids[0])))
    assert "  input      shard 3/3" in shard_stats
    reopened = processor.open_job(job.job_id)
    assert reopened.name == "all of it" and reopened.total_prompts == 12_000


def test_a_checkpoint_file_from_elsewhere_is_a_shard_too(tmp_path, prompts):
    here = BatchProcessor(tmp_path / "here")
    there = BatchProcessor(tmp_path / "there")
    first = shard(here, {"prompts": prompts, "shard": "1/2", "limit": 10})
    second = shard(there, {"prompts": prompts, "shard": "2/2", "limit": 10})
    copied = shutil.copy(there.store.path_for(second), tmp_path / f"batch_{second}.db")
    job = here.merge_shards([first, str(copied)])
    assert [p.text for p in job.prompts] == [f"q{i}" for i in range(1, 21)]


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ({"shard": "2/2", "max_tokens": 9}, "are not shards of one job: they differ in settings"),
        ({"shard": "2/3"}, "are shards of different splits (2 and 3 shards)"),
        ({"shard": "1/2"}, "shard 1/2 is given twice"),
        ({"shard": "2/2", "limit": 5}, "they differ in input_slice"),
        ({}, "is not a shard: only jobs run with --shard I/N are merged"),
    ],
)
def test_shards_of_different_jobs_are_refused(tmp_path, prompts, second, expected):
    processor = BatchProcessor(tmp_path / "checkpoints")
    ids = [
        shard(processor, {"prompts": prompts, "shard": "1/2"}),
        shard(processor, {"prompts": prompts, **second}),
    ]
    with pytest.raises(CheckpointError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        processor.merge_shards(ids)


def test_missing_changed_and_unfinished_shards_are_refused(tmp_path, prompts):
    processor = BatchProcessor(tmp_path / "checkpoints")
    one = shard(processor, {"prompts": prompts, "shard": "1/3"})
    two = shard(processor, {"prompts": prompts, "shard": "2/3"})
    with pytest.raises(CheckpointError, match=r"shard 3/3 is missing"):
        processor.merge_shards([one, two])
    unfinished = shard(processor, {"prompts": prompts, "shard": "3/3"}, run=False)
    with pytest.raises(CheckpointError, match=rf"shard 3/3 \(job {unfinished}\) is not finished"):
        processor.merge_shards([one, two, unfinished])
    prompts.write_text(prompts.read_text().replace('q5"', 'q5 changed"'))
    changed = shard(processor, {"prompts": prompts, "shard": "3/3"})
    with pytest.raises(CheckpointError, match="they differ in input_sha256"):
        processor.merge_shards([one, two, changed])
