"""What a result's time means: its own, not its wait. Locally, from its admission to a
slot to its end with pauses left out; on servers, the request that answered, with the
wait before it (queue position, earlier attempts) beside it. Pauses stop the clock."""

from __future__ import annotations

import threading
import time

import pytest

from tui_batch.core.backend import Backend, Completion, Task
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.settings import GenerationSettings
from tui_batch.core.stats import job_stats

from support.fake_server import FakeServer
from support.remote import run, settings, wait_for


class SlowSteps(Backend):
    """Holds `capacity` prompts; each finishes after `steps` steps of `seconds` each."""

    def __init__(self, capacity: int = 2, steps: int = 4, seconds: float = 0.05) -> None:
        self.capacity, self.steps, self.seconds = capacity, steps, seconds
        self.tasks: dict[int, int] = {}

    def submit(self, task: Task) -> None:
        self.tasks[task.index] = 0

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    def abort(self) -> list[int]:
        dropped = list(self.tasks)
        self.tasks.clear()
        return dropped

    def step(self) -> list[Completion]:
        time.sleep(self.seconds)
        done = []
        for index in list(self.tasks):
            self.tasks[index] += 1
            if self.tasks[index] >= self.steps:
                del self.tasks[index]
                done.append(Completion(index, response_text="ok", tokens_output=1))
        return done


def test_a_pause_is_not_counted_in_results_nor_in_the_elapsed_clock(tmp_path):
    processor = BatchProcessor(tmp_path)
    job = processor.create_job("m", ["a", "b"])
    pause, updates = threading.Event(), []
    pause.set()  # paused from the start: the prompts wait admitted, not running
    runner = threading.Thread(
        target=processor.process_batch,
        args=(job, SlowSteps()),
        kwargs={"pause_event": pause, "progress_callback": updates.append},
    )
    runner.start()
    time.sleep(1.0)
    pause.clear()
    runner.join(10)
    _, results = processor.load_job(job.job_id)
    # Four steps of 0.05 s each; the second of pause is in neither.
    assert all(0.15 <= r.duration < 0.6 for r in results), [r.duration for r in results]
    assert updates[-1].elapsed < 0.8 and updates[-1].tokens_per_second > 2
    assert all(r.queue_wait is None for r in results)  # a local model has no queue


def test_a_servers_latency_is_the_answering_requests_own_time(tmp_path):
    with FakeServer(delay=0.3) as fake:
        job, results, _ = run(tmp_path, settings(fake.url, concurrency=1), 4)
    # One at a time: each waits its turn, which is queue wait, not latency.
    assert all(0.25 <= r.duration < 0.6 for r in results), [r.duration for r in results]
    assert all(r.duration == r.attempt_log[-1].latency for r in results)
    waits = sorted(r.queue_wait for r in results)
    assert waits[0] < 0.2 and waits[-1] > 0.7  # the last waited for the three before it
    figures = job_stats(job.checkpoint_file)
    assert figures.queue_wait.count == 4 and figures.latency.max < 0.6


@pytest.mark.parametrize("fault", ["429", "500"])
def test_retries_are_waiting_too(tmp_path, fault):
    with FakeServer(delay=0.2) as fake:
        fake.script.append(fault)
        _, (result,), _ = run(tmp_path, settings(fake.url), 1, retries=2, backoff=0.3)
    assert result.attempts == 2 and 0.15 <= result.duration < 0.5
    assert result.queue_wait >= 0.2  # the failed attempt and its backoff


def test_the_remote_status_is_read_without_waiting_for_the_loop(tmp_path):
    from tui_batch.backends.remote.backend import RemoteBackend

    with FakeServer(delay=5) as fake:
        server = settings(fake.url, concurrency=2)
        backend = RemoteBackend(server, "fake-model")
        processor = BatchProcessor(tmp_path)
        job = processor.create_job("fake-model", ["a", "b"], server=server)
        cancel = threading.Event()
        with backend:
            runner = threading.Thread(
                target=processor.process_batch, args=(job, backend), kwargs={"cancel_event": cancel}
            )
            runner.start()
            wait_for(lambda: fake.in_flight == 2)
            started = time.perf_counter()
            for _ in range(1000):
                status = backend.status()
            assert time.perf_counter() - started < 0.5  # a frozen value, no round trip
            assert status.concurrency == 2
            wait_for(lambda: backend.status().in_flight == 2, 2)  # published as it changes
            cancel.set()
            runner.join(10)


def test_a_wedged_client_loop_never_hangs_abort_pause_or_close(tmp_path, monkeypatch):
    from tui_batch.backends.remote import backend as remote
    from tui_batch.backends.remote.backend import RemoteBackend

    monkeypatch.setattr(remote, "CALL_WAIT", 0.5)
    with FakeServer() as fake:
        server = settings(fake.url)
        backend = RemoteBackend(server, "fake-model")
        backend.open(GenerationSettings())
        job = BatchProcessor(tmp_path).create_job("fake-model", ["a"], server=server)
        backend.begin(job)
        backend.submit(Task(0, job.prompts[0]))
        assert backend._loop is not None
        backend._loop.call_soon_threadsafe(time.sleep, 30)  # the loop stops answering
        started = time.monotonic()
        backend.pause()
        backend.resume()
        assert backend.abort() == [0]
        backend.close()
        assert time.monotonic() - started < 6  # each wait bounded (0.5 s here), none for ever
