"""The engine with plain functions and a scripted out-of-order backend (failure injection)."""

from __future__ import annotations

import threading

import pytest

from tui_batch.core import events
from tui_batch.core.backend import Backend, Completion, Task
from tui_batch.core.errors import SettingsError
from tui_batch.core.jobs import JobStatus
from tui_batch.core.processor import BatchProcessor


def prompts(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


def failing_on(*bad: str):
    def execute(prompt: str) -> str:
        if prompt in bad:
            raise RuntimeError(f"cannot answer {prompt}")
        return prompt.upper()

    return execute


class OutOfOrderBackend(Backend):
    """Holds up to 3 prompts; prompt i needs (i % 3) + 1 steps, so they finish out of order."""

    capacity = 3

    def __init__(self) -> None:
        self.tasks: dict[int, list] = {}
        self.submitted: list[int] = []

    def submit(self, task: Task) -> None:
        self.submitted.append(task.index)
        self.tasks[task.index] = [task, (task.index % 3) + 1]

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    def step(self) -> list[Completion]:
        done = []
        for index, entry in list(self.tasks.items()):
            entry[1] -= 1
            if entry[1] == 0:
                del self.tasks[index]
                done.append(
                    Completion(
                        index,
                        response_text=entry[0].prompt.text * 2,
                        tokens_input=1,
                        tokens_output=2,
                    )
                )
        return done

    def abort(self) -> list[int]:
        aborted = list(self.tasks)
        self.tasks.clear()
        return aborted


def test_plain_function_runs_every_prompt_in_order(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(12))
    updates = []
    results = processor.process_batch(job, str.upper, progress_callback=updates.append)
    assert [r.response_text for r in results] == [p.upper() for p in prompts(12)]
    assert job.status is JobStatus.COMPLETED and job.completed == 12 and job.failed == 0
    assert job.completed_at is not None
    assert [u.done for u in updates] == list(range(1, 13))
    last = updates[-1]
    assert (last.percent, last.eta_seconds, last.total) == (100.0, 0.0, 12)
    assert last.throughput > 0 and last.result is results[-1]
    _, saved = processor.load_checkpoint(job.checkpoint_file)
    assert [r.to_dict() for r in saved] == [r.to_dict() for r in results]


def test_execute_fn_may_return_a_mapping_with_token_counts(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", ["a"])
    [result] = processor.process_batch(
        job, lambda p: {"response_text": "R", "tokens_input": 4, "tokens_output": 9}
    )
    assert (result.response_text, result.tokens_input, result.tokens_output) == ("R", 4, 9)


def test_continue_strategy_records_failures_and_completes(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(6))
    results = processor.process_batch(job, failing_on("p1", "p4"))
    assert [r.success for r in results] == [True, False, True, True, False, True]
    assert results[1].error_message == "RuntimeError: cannot answer p1"
    assert (job.completed, job.failed, job.status) == (4, 2, JobStatus.COMPLETED)


def test_stop_strategy_halts_on_first_error_and_is_resumable(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(6))
    results = processor.process_batch(job, failing_on("p2"), error_strategy="stop")
    assert [r.prompt_index for r in results] == [0, 1, 2]
    assert job.status is JobStatus.FAILED
    loaded, saved = processor.load_checkpoint(job.checkpoint_file)
    assert loaded.status is JobStatus.FAILED and len(saved) == 3 and loaded.error_strategy == "stop"
    rest = processor.process_batch(loaded, str.upper, error_strategy="continue")
    assert [r.prompt_index for r in rest] == list(range(6))
    assert rest[2].success is False  # resume does not retry failures unless asked


def test_threshold_strategy_stops_at_n_failures(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(10))
    results = processor.process_batch(
        job, failing_on("p1", "p3", "p5", "p7"), error_strategy="threshold:3"
    )
    assert job.failed == 3 and job.status is JobStatus.FAILED
    assert results[-1].prompt_index == 5


@pytest.mark.parametrize("bad", ["sometimes", "threshold:0", "threshold:x", "threshold:"])
def test_bad_error_strategy_is_refused(tmp_path, bad):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", ["a"])
    with pytest.raises(SettingsError, match="Error strategy: .* is not one of"):
        processor.process_batch(job, str.upper, error_strategy=bad)


def test_retries_with_backoff_then_success(tmp_path):
    calls: dict[str, int] = {}

    def flaky(prompt: str) -> str:
        calls[prompt] = calls.get(prompt, 0) + 1
        if prompt == "p1" and calls[prompt] < 3:
            raise TimeoutError("slow")
        return "ok"

    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(3), retries=2, retry_backoff=0.01)
    seen: list = []
    results = processor.process_batch(job, flaky, on_event=seen.append)
    assert all(r.success for r in results) and results[1].attempts == 3
    retries = [e for e in seen if isinstance(e, events.PromptRetrying)]
    assert [(e.index, e.attempt, e.delay) for e in retries] == [(1, 2, 0.01), (1, 3, 0.02)]


def test_retries_exhausted_is_a_failure_with_the_attempt_count(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(2), retries=1, retry_backoff=0.0)
    results = processor.process_batch(job, failing_on("p0"))
    assert (results[0].success, results[0].attempts) == (False, 2)


def test_resume_runs_only_missing_prompts_and_never_twice(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(20), checkpoint_every=3)
    cancel = threading.Event()
    calls: list[str] = []

    def execute(prompt: str) -> str:
        calls.append(prompt)
        if len(calls) == 8:
            cancel.set()
        return prompt.upper()

    first = processor.process_batch(job, execute, cancel_event=cancel)
    assert len(first) == 8 and job.status is JobStatus.CANCELLED
    loaded, saved = processor.load_checkpoint(job.checkpoint_file)
    assert len(saved) == 8 and loaded.status is JobStatus.CANCELLED  # a clean stop loses nothing
    results = processor.process_batch(loaded, execute)
    assert sorted(calls) == sorted(prompts(20)) and len(calls) == 20
    assert [r.prompt_index for r in results] == list(range(20))
    assert loaded.status is JobStatus.COMPLETED
    assert [r.to_dict() for r in results[:8]] == [r.to_dict() for r in first]


def test_retry_failed_is_explicit(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(4))
    processor.process_batch(job, failing_on("p1"))
    job, _ = processor.load_checkpoint(job.checkpoint_file)
    calls: list[str] = []
    unchanged = processor.process_batch(job, lambda p: calls.append(p) or "x")
    assert calls == [] and unchanged[1].success is False
    job, _ = processor.load_checkpoint(job.checkpoint_file)
    again = processor.process_batch(job, lambda p: calls.append(p) or "fixed", retry_failed=True)
    assert calls == ["p1"] and again[1].response_text == "fixed"
    assert (job.completed, job.failed) == (4, 0)


def test_out_of_order_backend_results_are_ordered_and_checkpointed(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(10), checkpoint_every=2)
    order: list[int] = []
    backend = OutOfOrderBackend()
    results = processor.process_batch(
        job, backend, progress_callback=lambda u: order.append(u.result.prompt_index)
    )
    assert order != sorted(order)  # they really did finish out of order
    assert [r.prompt_index for r in results] == list(range(10))
    assert [r.response_text for r in results] == [f"p{i}p{i}" for i in range(10)]
    _, saved = processor.load_checkpoint(job.checkpoint_file)
    assert [r.prompt_index for r in saved] == list(range(10))


def test_cancel_drops_in_flight_prompts_which_run_on_resume(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(9))
    cancel = threading.Event()

    def on_result(update):
        if update.done == 2:
            cancel.set()

    first_backend = OutOfOrderBackend()
    first = processor.process_batch(job, first_backend, on_result, cancel_event=cancel)
    assert 2 <= len(first) < len(first_backend.submitted)  # some were in flight at the cancel
    assert job.status is JobStatus.CANCELLED
    loaded, _ = processor.load_checkpoint(job.checkpoint_file)
    backend = OutOfOrderBackend()
    results = processor.process_batch(loaded, backend)
    done_first = {r.prompt_index for r in first}
    assert set(backend.submitted) == set(range(9)) - done_first
    assert [r.prompt_index for r in results] == list(range(9))
    assert [r.to_dict() for r in first] == [results[r.prompt_index].to_dict() for r in first]


def test_pause_holds_the_run_until_cleared(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(5))
    pause = threading.Event()
    statuses: list[JobStatus] = []

    def execute(prompt: str) -> str:
        if prompt == "p1":
            pause.set()
            threading.Timer(0.2, pause.clear).start()
        return prompt

    def on_event(event):
        if isinstance(event, events.JobStateChanged):
            statuses.append(event.status)

    results = processor.process_batch(job, execute, pause_event=pause, on_event=on_event)
    assert len(results) == 5
    assert statuses == [JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.RUNNING, JobStatus.COMPLETED]


def test_a_step_that_raises_fails_the_prompts_in_it_and_the_job_goes_on(tmp_path):
    class ExplodingOnce(OutOfOrderBackend):
        exploded = False

        def step(self):
            if len(self.submitted) > 5 and not self.exploded:
                self.exploded = True
                raise MemoryError("out of memory")
            return super().step()

    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(10), checkpoint_every=100)
    results = processor.process_batch(job, ExplodingOnce())
    failed = [r for r in results if not r.success]
    assert len(results) == 10 and failed
    assert all(r.error_message == "MemoryError: out of memory" for r in failed)
    assert job.status is JobStatus.COMPLETED


def test_a_prompt_whose_submit_raises_fails_alone(tmp_path):
    class Picky(OutOfOrderBackend):
        def submit(self, task):
            if task.index == 2:
                raise TypeError("'<' not supported between instances of 'NoneType' and 'int'")
            super().submit(task)

    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(5), retries=2)
    results = processor.process_batch(job, Picky())
    assert [r.success for r in results] == [True, True, False, True, True]
    assert results[2].error_message.startswith("TypeError: '<' not supported")
    assert results[2].attempts == 1  # running it again cannot help


def test_an_interrupted_backend_keeps_finished_results(tmp_path):
    class Interrupted(OutOfOrderBackend):
        def step(self):
            if len(self.submitted) > 5:
                raise KeyboardInterrupt
            return super().step()

    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(10), checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt):
        processor.process_batch(job, Interrupted())
    loaded, saved = processor.load_checkpoint(job.checkpoint_file)
    assert loaded.status is JobStatus.CANCELLED
    assert len(saved) == loaded.done > 0


def test_events_cover_a_run(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(2))
    seen: list = []
    processor.process_batch(job, str.upper, on_event=seen.append)
    kinds = [type(e).__name__ for e in seen]
    assert kinds == [
        "JobStateChanged",
        "PromptStarted",
        "ResultReady",
        "PromptStarted",
        "ResultReady",
        "JobStateChanged",
    ]


def test_one_job_never_runs_in_two_places_at_once(tmp_path):
    from tui_batch.core.errors import CheckpointError

    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", prompts(3))
    other = BatchProcessor(tmp_path)
    seen: list[str] = []

    def execute(prompt: str) -> str:
        if not seen:
            twin, _ = other.load_job(job.job_id)
            with pytest.raises(CheckpointError, match="already running in another process"):
                other.process_batch(twin, str.upper)
        seen.append(prompt)
        return prompt

    assert len(processor.process_batch(job, execute)) == 3
    again, _ = other.load_job(job.job_id)
    assert len(other.process_batch(again, str.upper)) == 3  # the lock went with the run


def test_batch_invariant_is_a_switch_with_its_own_default_parallel():
    from tui_batch.core.settings import (
        DEFAULT_PARALLEL_CPU,
        DEFAULT_PARALLEL_CPU_INVARIANT,
        DEFAULT_PARALLEL_GPU,
        GenerationSettings,
        settings_from_text,
    )

    settings, _ = settings_from_text({"batch_invariant": "on"})
    assert settings.batch_invariant is True
    assert settings.effective_parallel == DEFAULT_PARALLEL_CPU_INVARIANT
    assert settings_from_text({"batch_invariant": " Off "})[0].batch_invariant is False
    assert GenerationSettings().effective_parallel == DEFAULT_PARALLEL_CPU
    on_gpu = GenerationSettings(n_gpu_layers=-1, batch_invariant=True)
    assert on_gpu.effective_parallel == DEFAULT_PARALLEL_GPU
    with pytest.raises(SettingsError, match="Batch-invariant: expected on or off, got 'maybe'"):
        settings_from_text({"batch_invariant": "maybe"})
    with pytest.raises(SettingsError, match="Batch-invariant: expected true or false"):
        GenerationSettings.from_dict({"batch_invariant": "yes"})
    assert GenerationSettings.from_dict({}).batch_invariant is False  # jobs made before it
