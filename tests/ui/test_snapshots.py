"""Pictures of each screen at 120x36 with fixed data (pytest-textual-snapshot).

Fixed job ids, a fixed clock and fixed timestamps make them repeatable; update them
with `pytest tests/ui/test_snapshots.py --snapshot-update -n 0` after a deliberate change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable

from tui_batch.core.backend import CallableBackend
from tui_batch.core.processor import BatchProcessor
from tui_batch.ui.app import TuiBatchApp

from conftest import REPO
from support.ui import wait_until

SIZE = (120, 36)
FIXED_TIME = "2026-01-02T03:04:05+00:00"
PROMPTS = [f"Question {i}: explain topic number {i} in a few words." for i in range(40)]


class SteppingClock:
    """Time that moves only when the fake model answers, so every figure is fixed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer_with(clock: SteppingClock):
    def answer(prompt: str) -> dict:
        clock.now += 0.5
        number = int(prompt.split(":")[0].split()[1])
        if number % 7 == 3:
            raise RuntimeError(f"model refused prompt {number}")
        text = f"Topic {number} is [bold]important[/] because of reasons.\nSecond line."
        return {"response_text": text, "tokens_input": 12 + number, "tokens_output": 20 + number}

    return answer


@pytest.fixture
def fixed_app(monkeypatch):
    for module in ("tui_batch.core.jobs", "tui_batch.core.store", "tui_batch.core.batch_run"):
        monkeypatch.setattr(f"{module}.utc_now", lambda: FIXED_TIME)
    clock = SteppingClock()
    processor = BatchProcessor(clock=clock)
    backend = answer_with(clock)
    older = processor.create_job("SmolLM2-135M-Instruct.Q4_1", PROMPTS[:12], job_id="older-job")
    processor.process_batch(older, backend)
    job = processor.create_job("SmolLM2-135M-Instruct.Q4_1", PROMPTS, job_id="snap-job")
    monkeypatch.chdir(REPO)  # the setup screen shows the path as given: keep it relative
    app = TuiBatchApp(
        Path("examples") / "batch_prompts.txt",
        processor=processor,
        backend_factory=lambda job: CallableBackend(backend),
    )
    return app, job


async def run_job(app, job, pilot) -> None:
    """The job run to its end, its last message handled, and no notification left."""
    app.start_job(job)
    await wait_until(pilot, lambda: app.run_state is not None and app.run_state.finished)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()  # the messages the worker posted last are handled
    app.clear_notifications()
    await pilot.pause()


async def settled(pilot) -> None:
    """Job setup once its token count has come back and every field has been laid out,
    with the focused field's cursor shown steadily (a blinking one is there or not by
    when the picture is taken)."""
    from tui_batch.ui.screens.setup import SetupScreen
    from tui_batch.ui.widgets.prompts_form import PromptsForm
    from tui_batch.ui.widgets.template_form import TemplateForm

    await wait_until(pilot, lambda: isinstance(pilot.app.screen, SetupScreen))
    screen = pilot.app.screen
    prompts, template = screen.query_one(PromptsForm), screen.query_one(TemplateForm)
    if screen.using_template:
        await wait_until(pilot, lambda: not template.preview_scheduled)
    else:
        await wait_until(pilot, lambda: prompts.file_preview is None or prompts.file_preview.done)
    await pilot.app.workers.wait_for_complete()  # the token count, the preview
    for widget in pilot.app.screen.query("Input, TextArea"):
        widget.cursor_blink = False
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()


class TestSetupScreen:
    def test_setup_with_the_example_file(self, snap_compare, fixed_app):
        app, _ = fixed_app
        assert snap_compare(app, terminal_size=SIZE, run_before=settled)


class TestSetupTemplateTab:
    def test_the_example_job_file(self, snap_compare, fixed_app, monkeypatch):
        monkeypatch.chdir(REPO)
        app, _ = fixed_app
        app.prompts_file = Path("examples") / "job.toml"

        async def quiet(pilot) -> None:
            await settled(pilot)
            app.clear_notifications()
            await pilot.pause()

        assert snap_compare(app, terminal_size=SIZE, run_before=quiet)


class TestProgressScreen:
    def test_finished_job(self, snap_compare, fixed_app):
        app, job = fixed_app
        assert snap_compare(
            app, terminal_size=SIZE, run_before=lambda pilot: run_job(app, job, pilot)
        )

    def test_failed_only(self, snap_compare, fixed_app):
        app, job = fixed_app
        assert snap_compare(
            app, press=["f"], terminal_size=SIZE, run_before=lambda pilot: run_job(app, job, pilot)
        )


class TestJobsScreen:
    def test_a_finished_job_and_one_waiting_for_its_model(self, snap_compare, fixed_app):
        app, job = fixed_app

        async def two_jobs(pilot) -> None:
            await run_job(app, job, pilot)
            waiting = app.processor.create_job("other-model", PROMPTS[:5], job_id="wait-job")
            app.queue.backends.ready = lambda job: job.job_id != "wait-job"
            app.start_job(waiting)
            await pilot.pause()
            app.clear_notifications()
            await pilot.pause()

        assert snap_compare(app, press=["ctrl+j"], terminal_size=SIZE, run_before=two_jobs)


class TestResultsScreen:
    def test_failed_results_with_detail(self, snap_compare, fixed_app):
        app, job = fixed_app
        assert snap_compare(
            app,
            press=["r", "f", "down"],
            terminal_size=SIZE,
            run_before=lambda pilot: run_job(app, job, pilot),
        )


class TestCheckpointsScreen:
    def test_two_jobs_and_a_damaged_file(self, snap_compare, fixed_app):
        app, job = fixed_app
        (app.processor.checkpoint_dir / "batch_damaged.db").write_bytes(b"junk" * 64)
        assert snap_compare(
            app,
            press=["ctrl+b"],
            terminal_size=SIZE,
            run_before=lambda pilot: run_job(app, job, pilot),
        )


class TestHelpScreen:
    def test_every_key(self, snap_compare, fixed_app):
        app, _ = fixed_app
        assert snap_compare(app, press=["f1"], terminal_size=SIZE)


class TestStatsScreen:
    def test_figures_and_failure_groups(self, snap_compare, fixed_app):
        app, job = fixed_app

        async def stats(pilot) -> None:
            await run_job(app, job, pilot)
            await _open(pilot, lambda: app.show_stats(job.job_id))

        assert snap_compare(app, terminal_size=SIZE, run_before=stats)


class TestCompareScreen:
    def test_two_jobs_side_by_side(self, snap_compare, fixed_app):
        app, job = fixed_app

        async def compare(pilot) -> None:
            await run_job(app, job, pilot)
            from tui_batch.ui.screens.compare import CompareScreen

            await _open(pilot, lambda: app.push_screen(CompareScreen(["older-job", job.job_id])))

        assert snap_compare(app, terminal_size=SIZE, run_before=compare)


# Two labelling runs over the same 12 reviews, scored against labels written by hand.
LABELLED = [
    ("The kettle boils fast and looks good.", "positive"),
    ("Lid snapped in a week.", "negative"),
    ("Does the job, nothing more.", "neutral"),
    ("Loud, really loud.", "negative"),
    ("Best headphones I have owned.", "positive"),
    ("Fine for the price.", "neutral"),
    ("Battery died after a month.", "negative"),
    ("Comfortable for hours.", "positive"),
    ("It is a lamp. It lights things.", "neutral"),
    ("Flickers and gives me a headache.", "negative"),
    ("Perfect for my small desk.", "positive"),
    ("Okay, not great.", ""),  # no label written: unscored
]
FIRST_RUN = ["positive", "negative", "positive", "negative", "positive", "neutral",
             "negative", "positive", "positive", "negative", "positive", "neutral"]  # fmt: skip
SECOND_RUN = ["positive", "positive", "neutral", "negative", "positive", "positive",
              "negative", "neutral", "neutral", "neutral", "positive", "neutral"]  # fmt: skip


@pytest.fixture
def scored_app(fixed_app):
    from tui_batch.core.jobs import Prompt
    from tui_batch.core.run_spec import RunSpec

    app, _ = fixed_app
    spec = RunSpec.from_values(
        {"choices": "positive,negative,neutral", "expect": "label", "invalid_retries": "0"}
    )
    prompts = [
        Prompt(text, custom_id=f"r{n:02}", variables={"label": label})
        for n, (text, label) in enumerate(LABELLED, 1)
    ]
    for job_id, answers in (("labels-a", FIRST_RUN), ("labels-b", SECOND_RUN)):
        job = app.processor.create_job("SmolLM2-135M-Instruct.Q4_1", prompts, job_id=job_id,
                                       spec=spec)  # fmt: skip
        replies = iter(answers)
        app.processor.process_batch(job, lambda _, replies=replies: next(replies))
    return app


def _ready(screen) -> bool:
    """A screen whose figures come from a worker has them (stats, compare); any other
    has what it reads when it mounts."""
    for figures in ("stats", "summary"):
        if hasattr(screen, figures) and getattr(screen, figures) is None:
            return False
    # Its tables laid out with their rows (a busy run once showed a confusion matrix
    # shown, its rows in, sized 0 by 0).
    tables = [t for t in screen.query(DataTable) if t.display and t.row_count]
    return screen.is_mounted and all(t.size.height > 1 for t in tables)


async def _open(pilot, show) -> None:
    """`show` a screen, then wait for what it shows, never for a time."""
    before = pilot.app.screen
    show()
    await wait_until(pilot, lambda: pilot.app.screen is not before and _ready(pilot.app.screen))
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()  # the screen repainted with it


class TestScores:
    def test_wrong_answers_with_the_expected_one_beside(self, snap_compare, scored_app):
        app = scored_app
        assert snap_compare(
            app,
            press=["w", "down"],
            terminal_size=SIZE,
            run_before=lambda pilot: _open(pilot, lambda: app.show_results("labels-b")),
        )

    def test_stats_with_accuracy_and_the_confusion_matrix(self, snap_compare, scored_app):
        app = scored_app
        assert snap_compare(
            app,
            press=["down"],  # the cursor starts on the matrix's first cell
            terminal_size=SIZE,
            run_before=lambda pilot: _open(pilot, lambda: app.show_stats("labels-b")),
        )

    def test_compare_with_regressions_first(self, snap_compare, scored_app):
        from tui_batch.ui.screens.compare import CompareScreen

        app = scored_app
        assert snap_compare(
            app,
            press=["r"],
            terminal_size=SIZE,
            run_before=lambda pilot: _open(
                pilot, lambda: app.push_screen(CompareScreen(["labels-a", "labels-b"]))
            ),
        )
