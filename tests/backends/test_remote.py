"""Remote servers against our fault-injecting server: caps, rates, Retry-After, adaptive
limits, failover, timeouts, retries, cancel. Checked from the server's side where it counts."""

from __future__ import annotations

import threading
import time

import pytest

from tui_batch.backends.remote.backend import RemoteBackend
from tui_batch.core.jobs import JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.servers import parse_endpoint

from support.fake_server import FakeServer, free_port
from support.remote import in_thread, run, settings, wait_for


def test_every_prompt_answered_with_usage_endpoint_and_attempt(tmp_path):
    with FakeServer() as fake:
        job, results, _ = run(tmp_path, settings(fake.url), 20)
    assert job.status is JobStatus.COMPLETED and job.completed == 20
    assert [r.prompt_index for r in results] == list(range(20))
    first = results[0]
    assert first.response_text == "w0 w1 w2 w3 w4 w5 w6 w7"
    assert (first.tokens_input, first.tokens_output) == (2, 8)
    assert first.endpoint == fake.url and first.attempts == 1
    (attempt,) = first.attempt_log
    assert attempt.status == 200 and attempt.ttft is not None and attempt.latency >= attempt.ttft
    # The log is in the checkpoint.
    _, saved = BatchProcessor(tmp_path / "checkpoints").load_job(job.job_id)
    assert saved[0].attempt_log == first.attempt_log


def test_the_concurrency_caps_hold_overall_and_per_endpoint(tmp_path):
    with FakeServer(delay=0.1) as one:
        run(tmp_path, settings(one.url, concurrency=5), 40)
        assert one.peak == 5
    with FakeServer(delay=0.1) as a, FakeServer(delay=0.1) as b:
        run(tmp_path, settings(f"{a.url}#2", f"{b.url}#3", concurrency=50), 40)
        assert (a.peak, b.peak) == (2, 3)
    with FakeServer(delay=0.1) as a, FakeServer(delay=0.1) as b:
        run(tmp_path, settings(a.url, b.url, concurrency=4), 40)
        assert a.peak + b.peak <= 4 and min(a.peak, b.peak) >= 1


def test_the_rpm_limit_holds_at_the_server(tmp_path):
    with FakeServer() as fake:
        run(tmp_path, settings(fake.url, rpm=240), 16)  # 4 a second, bursts of 4
        arrivals = fake.arrivals
    assert len(arrivals) == 16
    for i, start in enumerate(arrivals):
        for window in (0.5, 1.0, 2.0):
            inside = sum(1 for t in arrivals[i:] if t - start < window)
            assert inside <= 4 * window + 4, (window, inside)
    assert arrivals[-1] - arrivals[0] >= 2.5


@pytest.mark.parametrize("fault", ["429:1.2", "429ms:1200", "429date:2"])
def test_no_request_reaches_an_endpoint_before_its_retry_after(tmp_path, fault):
    with FakeServer() as fake:
        fake.script.append(fault)
        job, results, _ = run(tmp_path, settings(fake.url, concurrency=1), 3)
        arrivals = fake.arrivals
    assert job.completed == 3
    assert arrivals[1] - arrivals[0] >= 1.0
    retried = results[0]
    assert retried.attempts == 2 and retried.attempt_log[0].status == 429
    assert retried.attempt_log[0].retry_after == pytest.approx(1.2, abs=1.0)


def test_a_429_halves_the_limit_and_successes_grow_it_back(tmp_path):
    with FakeServer(delay=0.05) as fake:
        fake.script.extend(["429:0.3"])
        job, _, backend = run(tmp_path, settings(fake.url, concurrency=8), 120)
    notes = list(backend.admission.notes)
    assert any("limit 4, paused 0.3s" in n for n in notes), notes
    assert any("limit grows to 6" in n for n in notes), notes
    assert any("limit grows to 8" in n for n in notes), notes
    assert backend.status().endpoints[0].limit == 8
    assert job.completed == 120


def test_a_dead_endpoint_fails_over_to_a_live_one(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FakeServer() as live:
        job, results, backend = run(tmp_path, settings(dead, live.url, concurrency=4), 30)
    assert job.completed == 30 and job.failed == 0
    assert {r.endpoint for r in results} == {live.url}
    refused = [a for r in results for a in r.attempt_log if a.endpoint == dead]
    assert refused and all(a.error.startswith("connection refused") for a in refused)
    # Refused connections never reached a server: they cost the prompt no retry.
    assert all(r.attempts <= 2 for r in results)
    states = {e.url: e.state for e in backend.status().endpoints}
    assert states[dead] == "out" and states[live.url] == "ok"


def test_when_every_endpoint_is_out_the_job_waits_for_one_to_return(tmp_path):
    port = free_port()
    server = settings(f"http://127.0.0.1:{port}/v1", concurrency=2)
    processor = BatchProcessor(tmp_path / "checkpoints")
    job = processor.create_job("fake-model", [f"p{i}" for i in range(6)], server=server, retries=0)
    backend = RemoteBackend(server, "fake-model")
    with backend:
        runner = in_thread(processor, job, backend)
        wait_for(lambda: backend.status().note is not None)
        note = backend.status().note
        time.sleep(1.0)
        assert job.done == 0  # waiting, not failing: retries=0 would fail at once
        with FakeServer(port=port):
            runner.join(30)
    assert "waiting" in note
    assert job.status is JobStatus.COMPLETED and job.completed == 6 and job.failed == 0


def test_timeouts_first_byte_and_stall_are_retried(tmp_path):
    with FakeServer() as fake:
        fake.script.extend(["delay:3", "stall"])
        server = settings(fake.url, concurrency=1, first_token_timeout=0.5, stall_timeout=0.5)
        job, results, _ = run(tmp_path, server, 2)
        assert fake.cancelled >= 1  # the abandoned requests were closed, not left running
    errors = [a.error for r in results for a in r.attempt_log if a.error]
    assert errors == ["timeout: first byte", "timeout: stalled stream"]
    assert job.completed == 2


def test_the_request_deadline_bounds_a_whole_answer(tmp_path):
    with FakeServer() as fake:
        fake.script.append("delay:3")
        server = settings(
            fake.url, concurrency=1, stream=False, request_timeout=0.5, first_token_timeout=0.5
        )
        job, results, _ = run(tmp_path, server, 1, retries=0)
    assert job.failed == 1
    assert results[0].error_message == "timeout: request deadline"


def test_faults_are_retried_and_only_final_failures_count(tmp_path):
    with FakeServer() as fake:
        fake.script.extend(["500", "503", "drop", "malformed", "429", "500"])
        job, results, _ = run(
            tmp_path, settings(fake.url, concurrency=1), 4, retries=6, error_strategy="threshold:1"
        )
    assert job.status is JobStatus.COMPLETED and job.failed == 0
    errors = sorted(a.error.split(":")[0] for r in results for a in r.attempt_log if a.error)
    assert errors == [
        "HTTP 429",
        "HTTP 500",
        "HTTP 500",
        "HTTP 503",
        "connection dropped",
        "malformed response",
    ]


def test_a_bad_request_fails_at_once_with_the_servers_message(tmp_path):
    with FakeServer() as fake:
        job, results, _ = run(tmp_path, settings(fake.url), ["fine", "BAD_REQUEST here"], retries=5)
    assert job.completed == 1 and job.failed == 1
    assert results[1].attempts == 1
    assert results[1].error_message == f"HTTP 400 from {fake.url}: context too long"


def test_retries_run_out(tmp_path):
    with FakeServer() as fake:
        fake.script.extend(["500"] * 3)
        job, results, _ = run(tmp_path, settings(fake.url, concurrency=1), 1, retries=2)
    assert job.failed == 1 and results[0].attempts == 3


def test_no_usage_counts_the_streamed_tokens_and_marks_the_input_unknown(tmp_path):
    with FakeServer() as fake:
        fake.script.append("nousage")
        _, results, backend = run(tmp_path, settings(fake.url, concurrency=1), 2)
    first, second = results
    assert first.response_text and first.tokens_output == 8  # one chunk a token
    assert first.token_counts == "streamed" and not first.input_known and first.output_known
    assert first.attempt_log[0].token_counts == "streamed"
    assert (second.tokens_input, second.tokens_output, second.token_counts) == (2, 8, None)
    said = [c for c in backend.status().changes if "sends no token counts" in c]
    assert len(said) == 1 and "--no-stream" in said[0]  # said once, with what gets them
    with FakeServer() as fake:  # whole answers without usage: nothing to count
        fake.script.append("nousage")
        _, results, _ = run(tmp_path, settings(fake.url, concurrency=1, stream=False), 1)
    assert (results[0].tokens_output, results[0].token_counts) == (0, "unknown")


def test_whole_answers_without_streaming(tmp_path):
    with FakeServer() as fake:
        _, results, _ = run(tmp_path, settings(fake.url, stream=False), 3)
    assert results[0].response_text == "w0 w1 w2 w3 w4 w5 w6 w7"
    assert results[0].tokens_output == 8 and results[0].finish_reason == "length"


def test_cancel_closes_requests_and_leaves_their_prompts_pending(tmp_path):
    with FakeServer(delay=30) as fake:
        server = settings(fake.url, concurrency=3)
        processor = BatchProcessor(tmp_path / "checkpoints")
        job = processor.create_job("fake-model", ["a", "b", "c", "d"], server=server)
        cancel = threading.Event()
        backend = RemoteBackend(server, "fake-model")
        with backend:
            runner = in_thread(processor, job, backend, cancel_event=cancel)
            wait_for(lambda: fake.in_flight == 3)
            cancel.set()
            runner.join(10)
        wait_for(lambda: fake.cancelled == 3)
        assert fake.cancelled == 3 and fake.in_flight == 0
    assert job.status is JobStatus.CANCELLED and job.done == 0
    with FakeServer() as again:
        resumed, results = processor.load_job(job.job_id)
        resumed.server = server.with_endpoints((parse_endpoint(again.url),))
        with RemoteBackend(resumed.server, "fake-model") as backend:
            results = processor.process_batch(resumed, backend)
    assert [r.prompt_index for r in results] == [0, 1, 2, 3]
    assert all(r.success for r in results)


def test_live_text_streams_to_the_engine(tmp_path):
    seen: list[tuple[int, str]] = []
    with FakeServer() as fake:
        server = settings(fake.url, concurrency=1)
        processor = BatchProcessor(tmp_path / "checkpoints")
        job = processor.create_job("fake-model", ["a"], server=server)
        with RemoteBackend(server, "fake-model") as backend:
            processor.process_batch(
                job,
                backend,
                on_event=lambda e: seen.append((e.index, e.text)) if hasattr(e, "text") else None,
            )
    assert "".join(text for _, text in seen) == "w0 w1 w2 w3 w4 w5 w6 w7"


def test_pause_calls_back_the_requests_sends_nothing_and_resume_sends_them_again(tmp_path):
    with FakeServer(delay=2) as fake:
        server = settings(fake.url, concurrency=2)
        processor = BatchProcessor(tmp_path / "checkpoints")
        job = processor.create_job("fake-model", ["a", "b", "c"], server=server, retries=0)
        pause = threading.Event()
        backend = RemoteBackend(server, "fake-model")
        with backend:
            runner = in_thread(processor, job, backend, pause_event=pause)
            wait_for(lambda: fake.in_flight == 2)
            pause.set()
            wait_for(lambda: fake.cancelled == 2)
            arrived = len(fake.arrivals)
            time.sleep(0.5)
            assert fake.in_flight == 0 and len(fake.arrivals) == arrived == 2  # nothing sent
            assert backend.status().note == "paused: nothing is sent"
            assert job.status is JobStatus.PAUSED
            pause.clear()
            runner.join(30)
    assert job.status is JobStatus.COMPLETED and job.completed == 3
    results = processor.load_job(job.job_id)[1]
    called_back = [r for r in results if r.attempts == 2]
    assert len(called_back) == 2  # sent again after the pause, at no cost (retries=0)
    assert called_back[0].attempt_log[0].error == "cancelled: the job was paused"
