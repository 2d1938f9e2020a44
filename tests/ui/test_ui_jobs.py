"""The dashboard's jobs at once: a job started while others run joins them on the one
loaded model, the progress screen switches between them, the Jobs view (ctrl+j) pauses,
stops and reprioritises each, a job on another GGUF waits for its model, quitting asks
once for all, and a group resumes whole from its screen."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from tui_batch.backends.llama.parallel import ParallelLlamaBackend
from tui_batch.core.jobs import GenerationSettings, JobStatus
from tui_batch.core.matrix import new_group_id
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompts import load_prompt_file
from tui_batch.core.structured.schema import parse_schema
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.group import GroupScreen
from tui_batch.ui.screens.jobs import JobsScreen
from tui_batch.ui.screens.modals import ConfirmScreen, QuitScreen
from tui_batch.ui.screens.progress import ProgressScreen

from conftest import EXAMPLES
from support.thinking_model import demo_with_template
from support.ui import SIZE, ready, settle, slow_backend, wait_until

INVARIANT = GenerationSettings(
    max_tokens=24, temperature=0.0, n_ctx=1024, n_threads=1, parallel=4, batch_invariant=True
)
LABEL = parse_schema("sentiment: positive|negative|neutral")
TERSE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}Answer:"


def _said(app) -> list[str]:
    return [n.message for n in app._notifications]


def _job_line(app) -> str:
    return str(app.screen.query_one("#job-line").visual)


def _alone(demo_model, prompts, settings) -> list[str]:
    """What the job's prompts answer when it runs alone on its own loaded model."""
    processor = BatchProcessor()
    backend = ParallelLlamaBackend(demo_model, settings.parallel)
    backend.open(settings)
    try:
        job = processor.create_job("demo", prompts, settings=settings)
        return [r.response_text for r in processor.process_batch(job, backend)]
    finally:
        backend.close()


@pytest.mark.model
async def test_a_job_started_while_another_runs_shares_its_loaded_model(demo_model):
    """Two jobs on the demo model, the second started while the first runs (no
    question): the model is loaded once, the Jobs view raises one's priority (its share
    of the slots), the progress screen switches between them with `n`, and each answers
    exactly as it does alone, with its own schema and system prompt."""
    prompts = load_prompt_file(EXAMPLES / "batch_prompts.txt").prompts[:16]
    labelled = replace(INVARIANT, schema=LABEL, max_tokens=16, system_prompt="Label the text.")
    processor = BatchProcessor()
    jobs = [
        processor.create_job("demo", prompts, settings=s, model_path=str(demo_model))
        for s in (INVARIANT, labelled)
    ]
    app = TuiBatchApp(processor=processor)
    loads: list[str] = []
    app.queue.backends.on_load = loads.append
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        app.start_job(jobs[0])
        await wait_until(pilot, lambda: app.run_state.job.done >= 1, 120)
        await pilot.press("p")  # held while the checks below are made (on a busy machine)
        app.start_job(jobs[1])  # while the first runs: no question asked
        await settle(pilot)
        assert isinstance(app.screen, ProgressScreen) and app.run_state.job is jobs[1]
        await pilot.press("p")  # held too
        await pilot.press("ctrl+j")
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)
        await pilot.press("plus", "plus")  # the second job, shown: its share weighs 3 now
        second = app.queue.find(jobs[1].job_id)
        assert second.priority == 3 and second.backend.priority == 3
        await pilot.press("escape")
        await wait_until(pilot, lambda: "job 2 of 2 running" in _job_line(app), 10)
        await pilot.press("n")
        assert app.run_state.job is jobs[0]
        await wait_until(pilot, lambda: "job 1 of 2 running" in _job_line(app), 10)
        await pilot.press("p", "n", "p")  # both go on, together
        assert app.run_state.job is jobs[1]
        await wait_until(pilot, lambda: not app.batch_active, 300)
        await settle(pilot)
    assert loads == [jobs[0].model_id]  # loaded once, for both
    for job, settings in zip(jobs, (INVARIANT, labelled), strict=True):
        assert job.status is JobStatus.COMPLETED and job.completed == len(prompts)
        stored = [r.response_text for r in processor.load_job(job.job_id)[1]]
        assert stored == _alone(demo_model, prompts, settings)


@pytest.mark.model
async def test_a_job_on_another_gguf_waits_for_its_model_and_the_higher_priority_goes_first(
    demo_model, tmp_path
):
    """One model in memory at a time: jobs on two other GGUFs wait while the demo
    model's job runs (the Jobs view says so); when it ends, the waiting job of the higher
    priority is loaded first, though added last, and the other after it."""
    prompts = load_prompt_file(EXAMPLES / "batch_prompts.txt").prompts[:3]
    settings = replace(INVARIANT, max_tokens=8)
    processor = BatchProcessor()
    models = [demo_model] + [
        demo_with_template(tmp_path / f"{name}.gguf", TERSE) for name in ("second", "third")
    ]
    jobs = [
        processor.create_job(path.stem, prompts, settings=settings, model_path=str(path))
        for path in models
    ]
    app = TuiBatchApp(processor=processor)
    loads: list[str] = []
    app.queue.backends.on_load = loads.append
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        app.start_job(jobs[0])
        app.run_state.pause.set()  # held until the others are queued
        await wait_until(pilot, lambda: app.run_state.job_status is JobStatus.PAUSED, 120)
        app.start_job(jobs[1])
        app.start_job(jobs[2])
        await settle(pilot)
        waiting = [app.queue.find(job.job_id) for job in jobs[1:]]
        assert [entry.state() for entry in waiting] == ["waiting for its model"] * 2
        assert any("waits for its model" in text for text in _said(app))
        await pilot.press("ctrl+j")
        await settle(pilot)
        rows = app.screen.query_one("#jobs")
        assert rows.count == 3
        assert "waiting for its model" in "".join(str(cell) for cell in rows._row(1))
        rows.follow(2)
        await pilot.press("plus")  # the third job, added last, goes first now
        assert waiting[1].priority == 2
        app.queue.find(jobs[0].job_id).run.pause.clear()
        await wait_until(pilot, lambda: not app.batch_active, 300)
        await settle(pilot)
    assert loads == [job.model_id for job in (jobs[0], jobs[2], jobs[1])]
    started = [processor.open_job(job.job_id).started_at for job in jobs]  # to the second
    assert started[0] <= started[2] <= started[1]
    assert all(job.status is JobStatus.COMPLETED for job in jobs)


async def test_pause_stop_and_quit_act_per_job_and_quitting_asks_once_for_all(tmp_path):
    """Three jobs at once: `p` in the Jobs view pauses only the one under the cursor,
    `x` stops only it (after asking), ctrl+q asks once for the other two and `s` stops
    both; every job is saved where it stopped, resumable."""
    processor = BatchProcessor()
    jobs = [processor.create_job("m", [f"{n} {i}" for i in range(400)]) for n in "abc"]
    app = TuiBatchApp(processor=processor, backend_factory=slow_backend(0.02))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        for job in jobs:
            app.start_job(job)
        await wait_until(pilot, lambda: all(job.done >= 2 for job in jobs), 60)
        await pilot.press("ctrl+j")
        await settle(pilot)
        await pilot.press("p")  # the first job: the cursor starts on the one shown, the last
        runs = {entry.job_id: entry.run for entry in app.queue.jobs}
        paused = jobs[2].job_id
        await wait_until(pilot, lambda: runs[paused].job_status is JobStatus.PAUSED, 30)
        done = jobs[2].done
        await pilot.press("up", "x")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_until(pilot, lambda: runs[jobs[1].job_id].finished, 30)
        assert jobs[1].status is JobStatus.CANCELLED
        assert jobs[0].status is JobStatus.RUNNING and jobs[2].done == done  # still paused
        await pilot.press("ctrl+q")
        await settle(pilot)
        assert isinstance(app.screen, QuitScreen)
        question = str(app.screen.question)
        assert "2 jobs are running" in question and jobs[0].job_id in question
        start = time.monotonic()
        await pilot.press("s")
        await wait_until(pilot, lambda: not app.batch_active, 30)
        stopped_in = time.monotonic() - start
    assert stopped_in < 10  # each after its current step, the paused one let go
    for job in jobs:
        saved = processor.open_job(job.job_id)
        assert saved.status is JobStatus.CANCELLED and 0 < saved.done < 400


async def test_a_waiting_job_stopped_before_it_starts_is_left_as_it_was(tmp_path):
    """A job waiting for its model, stopped: it never starts, nothing of it changes, and
    it resumes later from its first prompt."""
    processor = BatchProcessor()
    job = processor.create_job("m", ["one", "two"])
    app = TuiBatchApp(processor=processor, backend_factory=slow_backend(0.0))
    app.queue.backends.ready = lambda job: False  # its model is never free here
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        app.start_job(job)
        await settle(pilot)
        entry = app.queue.find(job.job_id)
        assert entry.state() == "waiting for its model"
        assert "waiting for its model" in _job_line(app)
        await pilot.press("x", "y")
        await wait_until(pilot, lambda: not app.batch_active, 10)
        assert entry.run.finished and entry.state() == "cancelled"
        assert any(f"Job {job.job_id} cancelled" in text for text in _said(app))
    saved = processor.open_job(job.job_id)
    assert saved.done == 0 and saved.status is JobStatus.PENDING


async def test_a_running_job_is_not_started_twice(tmp_path):
    processor = BatchProcessor()
    job = processor.create_job("m", [f"p{i}" for i in range(200)])
    app = TuiBatchApp(processor=processor, backend_factory=slow_backend(0.02))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        app.start_job(job)
        await wait_until(pilot, lambda: job.done >= 1, 30)
        app.start_saved(job.job_id, retry_failed=False)
        await settle(pilot)
        assert len(app.queue.active()) == 1
        assert any("is already running here" in text for text in _said(app))
        app.run_state.cancel.set()
        await wait_until(pilot, lambda: not app.batch_active, 30)


@pytest.mark.model
async def test_a_group_resumes_whole_from_its_screen_on_one_loaded_model(demo_model):
    """A group whose jobs were made and never run (a kill -9 right after `tui-batch run
    --matrix` made them): `r` on its screen resumes every job at once on the one loaded
    model, each to its end."""
    prompts = load_prompt_file(EXAMPLES / "batch_prompts.txt").prompts[:4]
    processor = BatchProcessor()
    group_id = new_group_id()
    jobs = [
        processor.create_job(
            "demo",
            prompts,
            settings=replace(INVARIANT, max_tokens=12, temperature=t, seed=1),
            model_path=str(demo_model),
            group_id=group_id,
            variant=f"temperature={t}",
        )
        for t in (0.0, 1.0)
    ]
    app = TuiBatchApp(processor=processor)
    loads: list[str] = []
    app.queue.backends.on_load = loads.append
    most = 0
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        app.push_screen(GroupScreen(group_id))
        await settle(pilot)
        await pilot.press("r")
        await wait_until(pilot, lambda: len(app.queue.jobs) == 2, 30)

        def over() -> bool:
            nonlocal most
            most = max(most, len(app.queue.runs()))
            return all(entry.ended for entry in app.queue.jobs)

        await wait_until(pilot, over, 300)
        await settle(pilot)
    assert most == 2 and loads == ["demo"]
    for job in jobs:
        saved = processor.open_job(job.job_id)
        assert saved.status is JobStatus.COMPLETED and saved.completed == len(prompts)


def test_the_dashboards_max_models_is_checked_in_one_line(tmp_path):
    from conftest import run_cli

    for args, said in (
        (["--max-models", "0"], "expected a whole number of models from 1, got '0'"),
        (["--max-models=x", "p.txt"], "got 'x'"),
        (["--max-models"], "give a number of models"),
        (["--max-models", "2", "p.txt"], "the dashboard needs a terminal"),  # understood
    ):
        done = run_cli(*args)
        assert done.returncode == 2 and said in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
