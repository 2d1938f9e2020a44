"""Jobs read in from large inputs a chunk at a time: slices, shards, the chunked insert,
a kill -9 while it reads, and memory that does not grow with the input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tui_batch.core.backend import CallableBackend
from tui_batch.core.errors import CheckpointError, PromptFileError
from tui_batch.core.jobs import JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompt_stream import CHUNK, first_chunk, open_stream, reopen_stream
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.slices import InputSlice
from tui_batch.core.stored import StoredResults, result_counts


def write_lines(path: Path, count: int, text: str = "Prompt {i}") -> Path:
    with path.open("w") as out:
        for i in range(1, count + 1):
            out.write(text.format(i=i) + "\n")
    return path


def run_stream(tmp_path: Path, values: dict, execute=None) -> tuple[BatchProcessor, object]:
    spec = RunSpec.from_values({"checkpoint_every": 500, **values})
    processor = BatchProcessor(tmp_path / "checkpoints")
    stream = open_stream(spec, spec.input_slice)
    job = processor.create_streamed_job("instant", stream, first_chunk(stream), spec)
    backend = CallableBackend(execute or (lambda p: {"response_text": p.upper()}))
    processor.run_streamed(job, backend, stream=stream)
    return processor, job


def answered(job) -> list[tuple[int, str, str]]:
    return [
        (r.prompt_index, r.prompt, r.response_text)
        for r in StoredResults(job.checkpoint_file, job.prompts)
    ]


def test_a_file_of_several_chunks_runs_whole_in_order(tmp_path):
    path = write_lines(tmp_path / "p.txt", 2 * CHUNK + 123)
    _, job = run_stream(tmp_path, {"prompts": path})
    assert job.status is JobStatus.COMPLETED and job.reading is None
    rows = answered(job)
    assert len(rows) == job.total_prompts == 2 * CHUNK + 123
    assert rows[0] == (0, "Prompt 1", "PROMPT 1")
    assert rows[-1] == (2 * CHUNK + 122, f"Prompt {2 * CHUNK + 123}", f"PROMPT {2 * CHUNK + 123}")


def test_slices_take_the_records_they_name(tmp_path):
    path = write_lines(tmp_path / "p.txt", 1000)

    def texts(**chosen) -> list[str]:
        stream = open_stream(RunSpec.from_values({"prompts": path}), InputSlice(**chosen))
        return [p.text for p in first_chunk(stream)]

    assert texts(limit=3) == ["Prompt 1", "Prompt 2", "Prompt 3"]
    assert texts(start=998) == ["Prompt 998", "Prompt 999", "Prompt 1000"]
    assert texts(start=5, stop=7) == ["Prompt 5", "Prompt 6", "Prompt 7"]
    shards = [texts(shard=(i, 3)) for i in (1, 2, 3)]
    assert sorted(sum(shards, []), key=lambda t: int(t.split()[1])) == texts()
    assert shards[1][:2] == ["Prompt 2", "Prompt 5"]
    sample = texts(sample=50, seed=4)
    assert len(sample) == 50 == len(set(sample)) and sample == texts(sample=50, seed=4)
    assert sample != texts(sample=50, seed=5)
    assert [int(t.split()[1]) for t in sample] == sorted(int(t.split()[1]) for t in sample)


def test_a_slice_parses_only_the_records_it_takes(tmp_path):
    """A sample or shard of ten million lines parses its own records: a malformed line
    it passes over is not its business; one it takes is the usual error with its line."""
    lines = [json.dumps({"prompt": f"Prompt {i}"}) for i in range(1, 21)]
    clean = tmp_path / "clean.jsonl"
    clean.write_text("\n".join(lines) + "\n")
    lines[9] = '{"prompt": "Prompt 10"'  # record 10: broken JSON
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")

    def texts(source: Path = path, **chosen) -> list[str]:
        stream = open_stream(RunSpec.from_values({"prompts": source}), InputSlice(**chosen))
        return [p.text for p in first_chunk(stream)]

    assert texts(start=11) == [f"Prompt {i}" for i in range(11, 21)]
    assert texts(shard=(2, 3)) == [f"Prompt {i}" for i in (2, 5, 8, 11, 14, 17, 20)]
    draws = {seed: texts(clean, sample=5, seed=seed) for seed in range(20)}
    passed = next(seed for seed, drawn in draws.items() if "Prompt 10" not in drawn)
    taken = next(seed for seed, drawn in draws.items() if "Prompt 10" in drawn)
    assert texts(sample=5, seed=passed) == draws[passed]
    with pytest.raises(PromptFileError, match=r"p\.jsonl:10:\d+: invalid JSON"):
        texts(sample=5, seed=taken)
    with pytest.raises(PromptFileError, match=r"p\.jsonl:10:\d+: invalid JSON"):
        texts(start=5)


def test_a_template_job_takes_its_slice_and_keeps_it(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("id,topic\n" + "".join(f"{i},t{i}\n" for i in range(1, 101)))
    _, job = run_stream(
        tmp_path,
        {"template_text": "About {{ topic }}", "data": data, "range": "10:20", "shard": "1/2"},
    )
    assert [r[1] for r in answered(job)] == [f"About t{i}" for i in (11, 13, 15, 17, 19)]
    assert job.input_slice == InputSlice(start=10, stop=20, shard=(1, 2))


def test_a_duplicate_id_in_a_later_chunk_stops_the_reading_and_keeps_what_ran(tmp_path):
    """The chunk that holds it is not read in; the prompts before that chunk ran."""
    path = tmp_path / "p.jsonl"
    lines = [json.dumps({"prompt": f"q{i}", "id": f"x{i}"}) for i in range(CHUNK + 50)]
    lines.append(json.dumps({"prompt": "again", "id": "x7"}))
    path.write_text("\n".join(lines) + "\n")
    _, job = run_stream(tmp_path, {"prompts": path})
    assert job.status is JobStatus.FAILED
    assert result_counts(job.checkpoint_file).succeeded == CHUNK == job.total_prompts
    with pytest.raises(
        PromptFileError, match=rf"line {CHUNK + 51}: duplicate id 'x7' \(first on line 8\)"
    ):
        spec = RunSpec.from_values({"prompts": path})
        from tui_batch.core.run_input import load_run_input

        load_run_input(spec)


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tui_batch.core.backend import CallableBackend
    from tui_batch.core.processor import BatchProcessor
    from tui_batch.core.prompt_stream import first_chunk, open_stream
    from tui_batch.core.run_spec import RunSpec

    folder = Path(sys.argv[1])
    spec = RunSpec.from_values({"prompts": folder / "p.txt", "checkpoint_every": 50})
    processor = BatchProcessor(folder / "checkpoints")
    stream = open_stream(spec, None)
    job = processor.create_streamed_job("instant", stream, first_chunk(stream), spec, job_id="big")
    print("made", flush=True)

    def execute(prompt):
        time.sleep(0.0002)
        return {"response_text": prompt.upper()}

    processor.run_streamed(job, CallableBackend(execute), stream=stream)
    """
)


def test_kill_9_while_the_input_is_read_in_then_resume_runs_every_prompt_once(tmp_path):
    count = 4 * CHUNK + 7
    write_lines(tmp_path / "p.txt", count)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "made"
    checkpoint = tmp_path / "checkpoints" / "batch_big.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until it has read in a second chunk
        with sqlite3.connect(checkpoint) as connection:
            (prompts,) = connection.execute("SELECT COUNT(*) FROM prompts").fetchone()
        if prompts > CHUNK:
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    processor = BatchProcessor(tmp_path / "checkpoints")
    job = processor.open_job("big")
    assert job.reading is not None and CHUNK < job.total_prompts < count
    processor.run_streamed(
        job, CallableBackend(lambda p: {"response_text": p.upper()}), stream=reopen_stream(job)
    )
    job = processor.open_job("big")
    assert job.status is JobStatus.COMPLETED and job.reading is None
    rows = answered(job)
    assert [r[1] for r in rows] == [f"Prompt {i}" for i in range(1, count + 1)]
    assert all(text.upper() == answer for _, text, answer in rows)


def test_resume_refuses_to_read_on_from_a_changed_file(tmp_path):
    path = write_lines(tmp_path / "p.txt", CHUNK + 10)
    spec = RunSpec.from_values({"prompts": path})
    processor = BatchProcessor(tmp_path / "checkpoints")
    stream = open_stream(spec, None)
    job = processor.create_streamed_job("instant", stream, first_chunk(stream), spec)
    assert job.reading is not None
    write_lines(path, CHUNK + 10, "Changed {i}")
    with pytest.raises(CheckpointError, match="has changed since"):
        reopen_stream(processor.open_job(job.job_id))


MEMORY = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from tui_batch.core.backend import Backend, Completion
    from tui_batch.core.processor import BatchProcessor
    from tui_batch.core.prompt_stream import first_chunk, open_stream
    from tui_batch.core.run_spec import RunSpec

    class Instant(Backend):
        # Answers every prompt it holds in one step, as a big batch would.
        capacity = 256

        def __init__(self):
            self.tasks = []

        @property
        def in_flight(self):
            return len(self.tasks)

        def submit(self, task):
            self.tasks.append(task)

        def step(self):
            done, self.tasks = self.tasks, []
            return [Completion(t.index, response_text="ok", finish_reason="stop") for t in done]

        def abort(self):
            done, self.tasks = self.tasks, []
            return [t.index for t in done]

    folder = Path(sys.argv[1])
    spec = RunSpec.from_values({"prompts": folder / sys.argv[2], "checkpoint_every": 1000})
    processor = BatchProcessor(folder / ("checkpoints-" + sys.argv[2]))
    stream = open_stream(spec, None)
    job = processor.create_streamed_job("instant", stream, first_chunk(stream), spec)
    processor.run_streamed(job, Instant(), stream=stream)
    assert job.completed == job.total_prompts, job.completed
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def test_memory_does_not_grow_with_the_input(tmp_path):
    """A million prompts take no more memory than twenty thousand (a list of them held
    would take some 800 MiB)."""
    write_lines(tmp_path / "small.txt", 20_000, "Prompt number {i}: explain it.")
    write_lines(tmp_path / "big.txt", 1_000_000, "Prompt number {i}: explain it.")
    peaks = {}
    for name in ("small.txt", "big.txt"):
        out = subprocess.run(
            [sys.executable, "-c", MEMORY, str(tmp_path), name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        peaks[name] = int(out.split()[-1]) / 1024
    assert peaks["big.txt"] < 1.3 * peaks["small.txt"], peaks
