"""A job through the test Batch API server, run by the engine as any job: files under
the line limit, every answer stored once, lines answered with errors run again in a
later file, a run stopped anywhere resumed without a second create for any file, and a
batch refused at validation stopping the job with the provider's reason, nothing lost."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

from tui_batch.backends.remote.batch_backend import BatchApiBackend
from tui_batch.core.batch_records import BatchRecords
from tui_batch.core.jobs import JobStatus
from tui_batch.core.processor import BatchProcessor

from support.batch_api_server import BatchApiServer
from support.remote import settings

FAST = {"batch_max_lines": 7, "batch_poll": 0.05, "batch_poll_most": 0.2}


def batches(url, **values):
    """A Batch API job's servers, polled fast, files of 7 lines unless told."""
    return settings(url, batch_api=True, **{**FAST, **values})


def _job(tmp_path, server, count, texts=None, **fields):
    processor = BatchProcessor(tmp_path / "checkpoints")
    texts = texts or [f"prompt {i}" for i in range(count)]
    job = processor.create_job("m", texts, server=settings(server.url), **fields)
    return processor, job


def _answers(processor, job):
    return {r.prompt_index: r for r in processor.load_job(job.job_id)[1]}


def test_a_job_runs_in_files_under_the_limit_and_every_answer_is_stored_once(tmp_path):
    with BatchApiServer(validating=0.05, finalizing=0.05) as server:
        processor, job = _job(tmp_path, server, 20)
        backend = BatchApiBackend(batches(server.url), "m")
        results = processor.process_batch(job, backend)
        backend.close()
        assert job.status is JobStatus.COMPLETED and len(results) == 20
        answers = _answers(processor, job)
        assert [answers[i].response_text for i in range(20)] == [
            f"echo: prompt {i}" for i in range(20)
        ]
        files = BatchRecords(job.checkpoint_file).files()
        assert [f.lines for f in files] == [7, 7, 6]
        assert all(f.state == "ended" and f.status == "completed" for f in files)
        assert all(count == 1 for count in server.creates.values()) and len(server.creates) == 3


def test_failed_lines_run_again_in_a_later_file(tmp_path):
    with BatchApiServer(validating=0.05, finalizing=0.05) as server:
        processor, job = _job(tmp_path, server, 5, retries=2, retry_backoff=0.01)
        server.line_errors[f"{job.job_id}:2:1"] = 503
        backend = BatchApiBackend(batches(server.url), "m")
        processor.process_batch(job, backend)
        backend.close()
        answers = _answers(processor, job)
        assert all(answers[i].success for i in range(5))
        files = BatchRecords(job.checkpoint_file).files()
        assert [f.lines for f in files] == [5, 1]  # prompt 2 again, in file 2
        assert BatchRecords(job.checkpoint_file).lines_of(2) == {f"{job.job_id}:2:2": 2}


def test_a_stop_cancels_the_batch_at_the_provider_and_resume_keeps_what_it_finished(tmp_path):
    with BatchApiServer(validating=0.05, workers=1, line_delay=0.05) as server:
        processor, job = _job(tmp_path, server, 10)
        backend = BatchApiBackend(batches(server.url, batch_max_lines=50_000), "m")
        cancel = threading.Event()
        runner = threading.Thread(
            target=processor.process_batch, args=(job, backend), kwargs={"cancel_event": cancel}
        )
        runner.start()
        while not server.batches or next(iter(server.batches.values())).completed < 3:
            time.sleep(0.02)
        cancel.set()
        runner.join(30)
        backend.close()
        (record,) = BatchRecords(job.checkpoint_file).files()
        assert record.state == "created" and record.status in ("cancelling", "cancelled")
        (batch,) = server.batches.values()
        while batch.status != "cancelled":
            time.sleep(0.02)
        finished = batch.completed
        assert 3 <= finished < 10
        job = processor.open_job(job.job_id)
        backend = BatchApiBackend(batches(server.url, batch_max_lines=50_000), "m")
        processor.process_batch(job, backend)
        backend.close()
        answers = _answers(processor, job)
        assert job.status is JobStatus.COMPLETED and len(answers) == 10
        assert all(answers[i].response_text == f"echo: prompt {i}" for i in range(10))
        first, second = BatchRecords(job.checkpoint_file).files()
        assert first.status == "cancelled" and second.lines == 10 - finished  # only the rest
        assert list(server.creates.values()) == [1, 1]
        assert server.answered == 10  # none paid twice


def test_a_run_stopped_on_its_own_leaves_its_batch_for_resume(tmp_path):
    """A stop of its own (the provider out of reach past --give-up-after) cancels
    nothing: resume reattaches to the batch it made, and makes no other."""
    with BatchApiServer(validating=0.05, workers=1, line_delay=0.02) as server:
        processor, job = _job(tmp_path, server, 10)
        server.faults["get"] = deque(["503"] * 1000)
        quick = lambda seconds: time.sleep(min(seconds, 0.01))  # noqa: E731 - the backoff
        servers = batches(server.url, batch_max_lines=50_000, give_up_after=0.5)
        backend = BatchApiBackend(servers, "m", sleep=quick)
        processor.process_batch(job, backend)
        backend.close()
        reason = backend.stop_reason()
        assert job.status is JobStatus.CANCELLED and "Cannot poll" in reason
        assert "--give-up-after" in reason
        assert [f.state for f in BatchRecords(job.checkpoint_file).files()] == ["created"]
        server.faults["get"].clear()
        job = processor.open_job(job.job_id)
        backend = BatchApiBackend(batches(server.url, batch_max_lines=50_000), "m")
        processor.process_batch(job, backend)
        backend.close()
        assert job.status is JobStatus.COMPLETED and len(_answers(processor, job)) == 10
        assert list(server.creates.values()) == [1]


def test_a_provider_failing_for_a_while_is_tried_again_and_the_job_goes_on(tmp_path):
    with BatchApiServer(validating=0.05, finalizing=0.05) as server:
        processor, job = _job(tmp_path, server, 4)
        server.faults["upload"] = deque(["503"] * 3)  # one step's tries
        server.faults["get"] = deque(["drop"] * 6)  # two polls' tries
        quick = lambda seconds: time.sleep(min(seconds, 0.01))  # noqa: E731 - the backoff
        backend = BatchApiBackend(batches(server.url), "m", sleep=quick)
        processor.process_batch(job, backend)
        backend.close()
        assert job.status is JobStatus.COMPLETED and len(_answers(processor, job)) == 4
        assert list(server.creates.values()) == [1]
        said = backend.status().changes
        assert any("Cannot upload" in line and "tried again in 1s" in line for line in said)


def test_a_batch_refused_at_validation_stops_the_job_with_the_reason(tmp_path):
    with BatchApiServer(validating=0.05, token_quota=10) as server:
        processor, job = _job(tmp_path, server, 4)
        backend = BatchApiBackend(batches(server.url), "m")
        processor.process_batch(job, backend)
        backend.close()
        assert job.status is JobStatus.CANCELLED and job.done == 0
        reason = backend.stop_reason()
        assert reason.startswith("the provider refused batch") and "Enqueued token limit" in reason


def test_a_provider_that_cannot_be_reached_stops_the_job_resumable(tmp_path):
    with BatchApiServer(validating=0.05) as server:
        processor, job = _job(tmp_path, server, 3)
        server.faults["upload"] = deque(["503"] * 1000)
        quick = lambda seconds: time.sleep(min(seconds, 0.01))  # noqa: E731 - the backoff
        backend = BatchApiBackend(batches(server.url, give_up_after=0.5), "m", sleep=quick)
        processor.process_batch(job, backend)
        backend.close()
        assert job.status is JobStatus.CANCELLED and job.done == 0
        assert "Cannot upload" in backend.stop_reason() and "HTTP 503" in backend.stop_reason()
        assert [f.state for f in BatchRecords(job.checkpoint_file).files()] == ["written"]
        server.faults["upload"].clear()
        job = processor.open_job(job.job_id)  # the provider is back: resumed to its end
        backend = BatchApiBackend(batches(server.url), "m")
        processor.process_batch(job, backend)
        backend.close()
        assert job.status is JobStatus.COMPLETED and len(_answers(processor, job)) == 3


def test_answers_read_but_never_stored_are_read_again_not_paid_twice(tmp_path):
    """A run killed after a batch's answers were read and before the engine stored them
    all: resume reads them again from the ended batch's output file."""
    import sqlite3

    with BatchApiServer(validating=0.05, finalizing=0.05) as server:
        processor, job = _job(tmp_path, server, 6)
        backend = BatchApiBackend(batches(server.url, batch_keep_files=True), "m")
        processor.process_batch(job, backend)
        backend.close()
        with sqlite3.connect(job.checkpoint_file) as connection:  # as if never stored
            connection.execute("DELETE FROM results WHERE prompt_index IN (1, 4)")
        creates = dict(server.creates)
        job = processor.open_job(job.job_id)
        backend = BatchApiBackend(batches(server.url, batch_keep_files=True), "m")
        processor.process_batch(job, backend)
        backend.close()
        answers = _answers(processor, job)
        assert sorted(answers) == list(range(6)) and answers[4].response_text == "echo: prompt 4"
        assert dict(server.creates) == creates  # nothing made again


def test_a_batchs_files_are_deleted_at_the_provider_once_its_answers_are_stored(tmp_path):
    with BatchApiServer(validating=0.05, finalizing=0.05) as server:
        processor, job = _job(tmp_path, server, 9)
        backend = BatchApiBackend(batches(server.url), "m")
        processor.process_batch(job, backend)
        backend.close()
        files = BatchRecords(job.checkpoint_file).files()
        assert [f.lines for f in files] == [7, 2] and all(f.deleted for f in files)
        made = {f.file_id for f in files} | {f.output_file_id for f in files}
        assert made <= set(server.deleted) and not made & set(server.files)
        # kept where the job says so
        processor, job = _job(tmp_path / "kept", server, 3)
        backend = BatchApiBackend(batches(server.url, batch_keep_files=True), "m")
        processor.process_batch(job, backend)
        backend.close()
        (kept,) = BatchRecords(job.checkpoint_file).files()
        assert not kept.deleted and kept.file_id in server.files


def test_answers_keep_the_schema_and_reasoning_and_split_an_inline_thought(tmp_path):
    """Each line asks for the schema as `response_format` and carries the reasoning
    fields; an answer with its thought inline is split as a live one is."""
    from tui_batch.core.settings import GenerationSettings
    from tui_batch.core.structured.schema import schema_from_json

    schema = schema_from_json({"type": "object", "properties": {"a": {"type": "string"}}}, "test")
    with BatchApiServer(validating=0.05, finalizing=0.05) as server:
        job_settings = GenerationSettings(schema=schema, reasoning_effort="low")
        texts = ['say:<think>plan</think>{"a": "x"}', 'say:{"a": "y"}']
        processor, job = _job(tmp_path, server, 2, texts, settings=job_settings)
        sent = []
        original = server._answer

        async def seen(line):
            sent.append(line["body"])
            return await original(line)

        server._answer = seen
        backend = BatchApiBackend(batches(server.url), "m")
        processor.process_batch(job, backend)
        backend.close()
        assert all(body["response_format"]["type"] == "json_schema" for body in sent)
        assert all(body["reasoning_effort"] == "low" for body in sent)
        answers = _answers(processor, job)
        assert answers[0].reasoning == "plan" and answers[0].response_text == '{"a": "x"}'


def test_a_prompt_too_large_for_any_file_fails_alone(tmp_path):
    with BatchApiServer(validating=0.05, finalizing=0.05) as server:
        texts = ["short one", "x" * 3000, "short two"]
        processor, job = _job(tmp_path, server, 3, texts)
        backend = BatchApiBackend(batches(server.url, batch_max_mb=0.001), "m")
        processor.process_batch(job, backend)
        backend.close()
        answers = _answers(processor, job)
        assert answers[0].success and answers[2].success and not answers[1].success
        assert "more than a batch file may hold (1,000: --batch-max-mb)" in answers[1].error_message
        assert [f.lines for f in BatchRecords(job.checkpoint_file).files()] == [2]


def test_a_resumed_batch_whose_prompts_the_engine_gives_late_is_not_paid_twice(tmp_path):
    """Resume finds a batch in flight for prompts 5-9 while 0-4 were never sent; with
    room for two prompts at a time, the engine gives 5-9 only after the batch was read:
    their answers are read again from its file, never sent again."""
    from tui_batch.backends.remote.batch_client import BatchClient
    from tui_batch.backends.remote.batch_wire import custom_id, request_line
    from tui_batch.backends.remote.openai_api import Secret

    with BatchApiServer(validating=0.05, finalizing=0.05) as server:
        processor, job = _job(tmp_path, server, 10)
        ids = [custom_id(job.job_id, i, 1) for i in range(5, 10)]
        client = BatchClient(server.url, Secret("OPENAI_API_KEY"))
        body = lambda i: {"model": "m", "messages": [{"role": "user", "content": f"prompt {i}"}]}  # noqa: E731
        file_id = client.upload(
            "in.jsonl", b"".join(request_line(ids[i - 5], body(i)) for i in range(5, 10))
        )
        batch = client.create_once(file_id, {})
        client.close()
        records = BatchRecords(job.checkpoint_file)
        records.written(1, zip(ids, range(5, 10), strict=True))
        records.uploaded(1, file_id)
        records.creating(1)
        records.created(1, batch.id)  # as a run killed while its batch ran leaves it
        backend = BatchApiBackend(batches(server.url, batch_max_lines=2, batch_files=1), "m")
        processor.process_batch(processor.open_job(job.job_id), backend)
        backend.close()
        answers = _answers(processor, job)
        assert sorted(answers) == list(range(10))
        assert all(answers[i].response_text == f"echo: prompt {i}" for i in range(10))
        per_prompt = Counter(int(line.split(":")[1]) for line in server.answers.elements())
        assert per_prompt == Counter(dict.fromkeys(range(10), 1))


def test_an_expired_batch_keeps_what_it_finished_and_sends_only_the_rest_again(tmp_path):
    with BatchApiServer(validating=0.05, expire_after=1.0, workers=1, line_delay=0.15) as server:
        processor, job = _job(tmp_path, server, 10, retries=2, retry_backoff=0.01)
        backend = BatchApiBackend(batches(server.url, batch_max_lines=50_000), "m")
        processor.process_batch(job, backend)
        backend.close()
        answers = _answers(processor, job)
        assert job.status is JobStatus.COMPLETED and all(answers[i].success for i in range(10))
        first, *later = BatchRecords(job.checkpoint_file).files()
        assert first.status == "expired" and 0 < first.completed < 10
        assert sum(f.lines for f in later) == 10 - first.completed  # only the expired lines
        per_prompt = Counter(int(line.split(":")[1]) for line in server.answers.elements())
        assert per_prompt == Counter(dict.fromkeys(range(10), 1))
