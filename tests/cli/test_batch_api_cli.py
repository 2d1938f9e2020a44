"""`tui-batch run --batch-api` in real subprocesses against the test Batch API server,
each line answered by a real `llama_cpp.server` with the demo model: a whole job in
files, prices at the batch discount, `tui-batch batches`, kill -9 at each stage of a
batch's life and resume (one batch made per file, every prompt answered once at the
provider), Ctrl+C cancelling at the provider, a refused batch, and mistakes said in one
line."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui_batch.core.batch_records import BatchRecords
from tui_batch.core.processor import BatchProcessor

from conftest import run_cli
from support.batch_api_server import BatchApiServer
from support.cli import start_cli
from support.fake_server import start_llama_servers

ALIAS = "smollm2"
PROMPTS = [f"Name a colour number {i}." for i in range(10)]
QUICK = ["--max-tokens", "6", "--temperature", "0", "--batch-poll", "0.1"]
QUICK += ["--batch-poll-most", "0.3", "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def upstream(demo_model: Path) -> Iterator[str]:
    """A real llama-cpp-python server on loopback answering the batches' lines."""
    ((url, process),) = start_llama_servers(str(demo_model), 1, ALIAS)
    try:
        yield url
    finally:
        process.kill()
        process.wait(10)


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


def _wait(condition, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "waited too long"
        time.sleep(0.02)


def _only_job() -> str:
    (job,) = BatchProcessor().list_checkpoints()
    return job["job_id"]


def _answers_by_prompt(server: BatchApiServer) -> Counter[int]:
    """How many times the provider answered each prompt (over every attempt's line)."""
    answered: Counter[int] = Counter()
    for line_id, times in server.answers.items():
        answered[int(line_id.split(":")[1])] += times
    return answered


@pytest.mark.model
def test_a_job_runs_in_batches_through_the_cli_and_says_how_they_go(upstream, prompts):
    with BatchApiServer(upstream=upstream, validating=0.1, finalizing=0.1) as server:
        ran = run_cli(
            "run", str(prompts), "--server", server.url, "--batch-api",
            "--batch-max-lines", "4", *QUICK, "--price-in", "1", "--price-out", "2",
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert f"via {server.url}'s Batch API" in ran.stderr
        assert "Completed: 10 succeeded, 0 failed of 10" in ran.stderr
        assert "batch 1 (batch-" in ran.stderr, ran.stderr
        assert "completed: 4 of 4 done" in ran.stderr, ran.stderr
        job_id = _only_job()
        job, results = BatchProcessor().load_job(job_id)
        assert all(r.success and r.response_text.strip() for r in results)  # real answers
        files = BatchRecords(job.checkpoint_file).files()
        assert [f.lines for f in files] == [4, 4, 2] and all(f.deleted for f in files)
        assert sorted(server.creates.values()) == [1, 1, 1]
        assert set(_answers_by_prompt(server).values()) == {1}

        listed = run_cli("batches", job_id)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.count("completed") == 3 and listed.stdout.count("deleted") == 3
        listed = json.loads(run_cli("batches", job_id, "--json").stdout)
        assert [b["status"] for b in listed] == ["completed"] * 3

        stats = run_cli("stats", job_id, "--json")
        figures = json.loads(stats.stdout)
        tokens_in, tokens_out = figures["tokens_input"], figures["tokens_output"]
        expected = (tokens_in * 1 + tokens_out * 2) / 1e6 * 0.5
        assert figures["cost"]["total"] == pytest.approx(expected)
        assert "Batch API x0.5" in run_cli("stats", job_id).stdout


# Where a run is killed: the stage its batch is at, what the server is told to do then,
# and what the test waits to see before the kill.
STAGES = {
    # uploaded at the provider, the answer not yet back: the file is uploaded again
    "uploading": ("upload", "hold:30", lambda s: s.calls["upload"] >= 1 and s.files),
    # the batch made at the provider, the answer not yet back: resume finds it
    "creating": ("create", "hold:30", lambda s: bool(s.creates)),
    # made and recorded, its lines being answered: resume reattaches
    "in progress": ("get", None, lambda s: any(b.completed >= 2 for b in s.batches.values())),
    # ended, its output file being read: resume reads it again
    "reading": ("content", "hold:30", lambda s: s.calls["content"] >= 1),
}


@pytest.mark.model
@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_9_at_each_stage_then_resume_makes_one_batch_a_file_and_pays_once(
    upstream, prompts, stage
):
    endpoint, fault, reached = STAGES[stage]
    with BatchApiServer(
        upstream=upstream, validating=0.1, finalizing=0.1, workers=1, line_delay=0.05
    ) as server:
        if fault is not None:
            server.faults[endpoint] = __import__("collections").deque([fault])
        process = start_cli("run", str(prompts), "--server", server.url, "--batch-api", *QUICK)
        try:
            _wait(lambda: reached(server))
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)
        finally:
            process.kill()
        job_id = _only_job()
        resumed = run_cli("resume", job_id)
        assert resumed.returncode == 0, resumed.stderr
        assert "Completed: 10 succeeded" in resumed.stderr
        _, results = BatchProcessor().load_job(job_id)
        assert sorted(r.prompt_index for r in results) == list(range(10))
        assert all(r.success and r.response_text.strip() for r in results)
        assert set(server.creates.values()) == {1}  # one batch made on each file
        made_on = [b.input_file_id for b in server.batches.values()]
        assert len(made_on) == len(set(made_on))
        assert _answers_by_prompt(server) == Counter(dict.fromkeys(range(10), 1))


@pytest.mark.model
def test_ctrl_c_cancels_the_batch_at_the_provider_and_resume_sends_only_the_rest(upstream, prompts):
    with BatchApiServer(
        upstream=upstream, validating=0.1, finalizing=0.1, workers=1, line_delay=0.2
    ) as server:
        process = start_cli("run", str(prompts), "--server", server.url, "--batch-api", *QUICK)
        _wait(lambda: any(b.completed >= 3 for b in server.batches.values()))
        process.send_signal(signal.SIGINT)
        _, said = process.communicate(timeout=60)
        assert process.returncode == 130, said
        assert "1 batch cancelled at the provider" in said and "Traceback" not in said
        (batch,) = server.batches.values()
        _wait(lambda: batch.status == "cancelled")
        job_id = _only_job()
        resumed = run_cli("resume", job_id)
        assert resumed.returncode == 0, resumed.stderr
        assert "Completed: 10 succeeded" in resumed.stderr
        first, second = BatchRecords(BatchProcessor().store.path_for(job_id)).files()
        assert first.status == "cancelled" and second.lines == 10 - batch.completed
        assert _answers_by_prompt(server) == Counter(dict.fromkeys(range(10), 1))


def test_a_batch_the_provider_refuses_stops_the_job_in_one_line_nothing_lost(prompts):
    with BatchApiServer(validating=0.05, token_quota=20) as server:
        ran = run_cli("run", str(prompts), "--server", server.url, "--model", "m", "--batch-api",
                      *QUICK)  # fmt: skip
        assert ran.returncode == 1 and "Traceback" not in ran.stderr
        assert "the provider refused batch" in ran.stderr
        assert "Enqueued token limit reached" in ran.stderr
        assert f"tui-batch resume {_only_job()}" in ran.stderr
        server.token_quota = None  # the quota frees up: resume sends them again
        resumed = run_cli("resume", _only_job())
        assert resumed.returncode == 0, resumed.stderr
        assert "Completed: 10 succeeded" in resumed.stderr


@pytest.mark.model
def test_a_server_without_the_batch_api_is_said_in_one_line(upstream, prompts):
    ran = run_cli("run", str(prompts), "--server", upstream, "--batch-api", *QUICK)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert ran.stderr.count("\n") == 1
    assert "does not serve the Batch API" in ran.stderr
    assert BatchProcessor().list_checkpoints() == []


def test_batch_api_mistakes_are_one_line_each(prompts, tmp_path):
    cases = [
        (["--server", "http://127.0.0.1:9/v1", "--server", "http://127.0.0.1:8/v1"],
         "Batch API: one server takes a job's batches, not 2"),
        (["--server", "http://127.0.0.1:9/v1", "--batch-max-lines", "0"], "Batch lines"),
        (["--server", "http://127.0.0.1:9/v1", "--batch-discount", "2"], "Batch price"),
        ([], "Batch API (--batch-api) applies to servers only"),
    ]  # fmt: skip
    for flags, said in cases:
        ran = run_cli("run", str(prompts), "--batch-api", *flags)
        assert ran.returncode == 2, ran.stderr
        assert said in ran.stderr and ran.stderr.count("\n") == 1, ran.stderr


def test_a_job_file_keeps_the_batch_api_in_its_run_table(prompts, tmp_path):
    job_file = tmp_path / "job.toml"
    saved = run_cli(
        "run", str(prompts), "--server", "http://127.0.0.1:9/v1", "--model", "m",
        "--batch-api", "--batch-max-lines", "1000", "--save-job", str(job_file),
    )  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    text = job_file.read_text()
    assert "batch_api = true" in text and "batch_max_lines = 1000" in text
    run_table = text.split("[run]", 1)[1].split("\n[", 1)[0]
    assert "batch_api = true" in run_table
    with BatchApiServer(validating=0.05, finalizing=0.05) as server:
        ran = run_cli("run", str(job_file), "--server", server.url, *QUICK)
        assert ran.returncode == 0, ran.stderr
        assert "Batch API" in ran.stderr and sum(server.creates.values()) == 1


def test_answers_the_cache_serves_are_never_sent_in_a_batch(prompts, tmp_path):
    with BatchApiServer(validating=0.05, finalizing=0.05) as server:
        flags = ["--server", server.url, "--model", "m", "--batch-api", "--cache", "read-write"]
        first = run_cli("run", str(prompts), *flags, *QUICK)
        assert first.returncode == 0, first.stderr
        assert sum(server.creates.values()) == 1 and server.answered == 10
        more = tmp_path / "more.txt"
        more.write_text(prompts.read_text() + "One more prompt.\n", encoding="utf-8")
        second = run_cli("run", str(more), *flags, *QUICK)
        assert second.returncode == 0, second.stderr
        assert "10 of 11 answers served" in second.stderr
        assert sum(server.creates.values()) == 2 and server.answered == 11  # only the new one
