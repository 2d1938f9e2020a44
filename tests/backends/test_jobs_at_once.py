"""Several jobs at once: on one loaded model (its slots shared, each job with its own
settings, schema and max tokens, answers as each alone) and on one fleet of servers
(its concurrency and Retry-After the fleet's, shares by priority)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from tui_batch.backends.llama.parallel import ParallelLlamaBackend
from tui_batch.backends.llama.shared import SharedModel
from tui_batch.backends.pool import BackendPool
from tui_batch.core import events
from tui_batch.core.jobs import GenerationSettings, JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompts import load_prompt_file
from tui_batch.core.structured.schema import parse_schema

from conftest import EXAMPLES
from support.fake_server import FakeServer
from support.remote import settings

INVARIANT = GenerationSettings(
    max_tokens=24, temperature=0.0, n_ctx=1024, n_threads=1, batch_invariant=True
)
LABEL = parse_schema("sentiment: positive|negative|neutral")


def _at_once(processor, jobs, backends, **kwargs):
    """Run `jobs` at once, each on its backend and its own thread; `kwargs[job_id]`:
    that job's own arguments to `run_streamed`."""
    threads = [
        threading.Thread(
            target=processor.run_streamed, args=(job, backend), kwargs=kwargs.get(job.job_id, {})
        )
        for job, backend in zip(jobs, backends, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)


def _together(processor, jobs, shared, **kwargs):
    """Run `jobs` at once on lanes of `shared`."""
    _at_once(processor, jobs, [shared.lane() for _ in jobs], **kwargs)


@pytest.mark.model
def test_two_jobs_on_one_model_decode_together_and_answer_as_each_alone(demo_model, tmp_path):
    prompts = load_prompt_file(EXAMPLES / "batch_prompts.txt").prompts[:10]
    plain = INVARIANT
    labelled = replace(INVARIANT, schema=LABEL, max_tokens=16, system_prompt="Label the text.")
    processor = BatchProcessor(tmp_path / "checkpoints")
    alone, steps = [], []
    for generation in (plain, labelled):
        backend = ParallelLlamaBackend(demo_model, 8)
        backend.open(generation)
        try:
            job = processor.create_job("demo", prompts, settings=generation)
            alone.append(processor.process_batch(job, backend))
            steps.append(backend.timing.steps)
        finally:
            backend.close()
    jobs = [processor.create_job("demo", prompts, settings=s) for s in (plain, labelled)]
    shared = SharedModel(ParallelLlamaBackend(demo_model, 8))
    try:
        _together(processor, jobs, shared)
    finally:
        shared.close()
    for job, answers in zip(jobs, alone, strict=True):
        assert job.status is JobStatus.COMPLETED and job.completed == len(prompts)
        stored = processor.load_job(job.job_id)[1]
        assert [r.response_text for r in stored] == [r.response_text for r in answers]
        assert [r.tokens_output for r in stored] == [r.tokens_output for r in answers]
    labelled_answers = processor.load_job(jobs[1].job_id)[1]
    assert {r.output["sentiment"] for r in labelled_answers} <= {"positive", "negative", "neutral"}
    assert max(r.tokens_output for r in labelled_answers) <= 16
    # Decoded in the same steps: fewer than one job after the other.
    assert shared.backend.timing.steps < sum(steps)


@pytest.mark.model
def test_one_job_stopped_leaves_the_other_running_and_resumes_on_the_same_model(
    demo_model, tmp_path
):
    prompts = load_prompt_file(EXAMPLES / "batch_prompts.txt").prompts[:12]
    settings = replace(INVARIANT, batch_invariant=False, max_tokens=16)
    processor = BatchProcessor(tmp_path / "checkpoints")
    first, second = (processor.create_job("demo", prompts, settings=settings) for _ in range(2))
    stop = threading.Event()
    seen: list[events.ResultReady] = []

    def stop_after_three(event):
        if isinstance(event, events.ResultReady):
            seen.append(event)
            if len(seen) >= 3:
                stop.set()

    shared = SharedModel(ParallelLlamaBackend(demo_model, 4))
    try:
        _together(
            processor,
            [first, second],
            shared,
            **{first.job_id: {"cancel_event": stop, "on_event": stop_after_three}},
        )
        assert first.status is JobStatus.CANCELLED and first.done < len(prompts)
        assert second.status is JobStatus.COMPLETED and second.done == len(prompts)
        loaded = shared.backend.loaded
        processor.run_streamed(processor.load_job(first.job_id)[0], shared.lane())
        assert shared.backend.loaded is loaded  # the same model, never loaded again
    finally:
        shared.close()
    resumed, results = processor.load_job(first.job_id)
    assert resumed.status is JobStatus.COMPLETED
    assert sorted(r.prompt_index for r in results) == list(range(len(prompts)))
    assert all(r.success and r.response_text for r in results)


def _fleet_jobs(processor, server_settings, count, **job):
    return [
        processor.create_job(
            "fake-model",
            [f"job{n} prompt {i}" for i in range(count)],
            server=server_settings,
            retries=3,
            retry_backoff=0.05,
            **job,
        )
        for n in range(2)
    ]


def _on_a_fleet(processor, jobs, priorities=(1, 1)):
    """Run `jobs` at once on the backends a pool gives them (one fleet for one set of
    servers), each with its priority."""
    pool = BackendPool()
    try:
        backends = [
            pool.take(job, priority) for job, priority in zip(jobs, priorities, strict=True)
        ]
        _at_once(processor, jobs, backends)
        for backend in backends:
            pool.give_back(backend)
    finally:
        pool.close()


def test_jobs_on_one_fleet_keep_its_concurrency_together_and_share_by_priority(tmp_path):
    with FakeServer(delay=0.2) as server:
        fleet = settings(server.url, concurrency=4)
        processor = BatchProcessor(tmp_path / "checkpoints")
        jobs = _fleet_jobs(processor, fleet, 24)
        _on_a_fleet(processor, jobs, priorities=(3, 1))
        assert all(job.status is JobStatus.COMPLETED for job in jobs)
        assert server.peak <= 4  # the fleet's limit, for both jobs together
        # While both had prompts waiting, the job of priority 3 had three of the four
        # (the first four go to whichever job asks first: none is held back for the other).
        senders = [body["messages"][-1]["content"][:4] for body in server.bodies[4:20]]
        assert senders.count("job0") >= 10, senders


def test_a_429_pauses_the_server_for_every_job_on_it(tmp_path):
    with FakeServer(delay=0.05) as server:
        server.script.extend(["ok", "ok", "429:1"])
        fleet = settings(server.url, concurrency=1)
        processor = BatchProcessor(tmp_path / "checkpoints")
        jobs = _fleet_jobs(processor, fleet, 6)
        _on_a_fleet(processor, jobs)
        assert all(job.status is JobStatus.COMPLETED and job.failed == 0 for job in jobs)
        # The next request, of either job, waited out the Retry-After.
        assert server.arrivals[3] - server.arrivals[2] >= 0.95
        senders = {body["messages"][-1]["content"][:4] for body in server.bodies}
        assert senders == {"job0", "job1"}


def test_the_pool_loads_a_model_once_and_one_model_at_a_time(demo_model, tmp_path):
    """Which jobs may start beside which (nothing is loaded here: a job's backend loads
    its model when the job begins)."""
    second = tmp_path / "second.gguf"
    second.symlink_to(demo_model)
    processor = BatchProcessor(tmp_path / "checkpoints")
    fast = GenerationSettings(parallel=4, n_threads=1)

    def job(path=demo_model, **settings):
        return processor.create_job(
            "m", ["hi"], settings=replace(fast, **settings), model_path=str(path)
        )

    pool = BackendPool()
    first = pool.take(job())
    assert pool.ready(job())  # the same model, the same load settings: beside it
    beside = pool.take(job(temperature=0.7))  # sampling is each job's own
    assert beside.model is first.model  # one SharedModel: one copy of the GGUF
    assert not pool.ready(job(path=second))  # another model waits (--max-models 1)
    assert not pool.ready(job(n_ctx=4096))  # the same model loaded otherwise waits
    assert not pool.ready(job(parallel=8))  # other slots wait
    pool.give_back(first)
    pool.give_back(beside)
    assert pool.ready(job(path=second))  # free: the idle model makes room
    other = pool.take(job(path=second))
    assert other.model is not first.model and len(pool._models) == 1
    assert pool.ready(processor.create_job("m", ["hi"], server=settings("http://127.0.0.1:9/v1")))
    pool.give_back(other)
    pool.close()

    roomy = BackendPool(max_models=2)
    roomy.take(job())
    assert roomy.ready(job(path=second))  # two fit
    alone = BackendPool()
    alone.take(job(parallel=0))  # one prompt at a time: the model to itself
    assert not alone.ready(job(parallel=0))
    for pool in (roomy, alone):
        pool.close()
