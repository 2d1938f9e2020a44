"""The stats and compare screens, driven by keys: a failure group opens its results,
jobs marked in the checkpoint browser are compared, the figures follow a running job."""

from __future__ import annotations

import threading

from tui_batch.core.compare import Comparison
from tui_batch.core.processor import BatchProcessor
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.checkpoints import CheckpointsScreen
from tui_batch.ui.screens.compare import CompareScreen
from tui_batch.ui.screens.results import ResultsScreen
from tui_batch.ui.screens.stats import StatsScreen

from support.ui import SIZE, ready, settle, slow_backend, wait_until


def answer(prompt: str) -> str:
    number = int(prompt.split()[-1])
    if number % 5 == 0:
        raise RuntimeError(f"upstream refused request {number * 7} after {number}s")
    if number % 7 == 0:
        raise RuntimeError("HTTP 429 rate limited")
    return f"answer {number % 3}"


def finished_jobs(count: int = 30) -> tuple[BatchProcessor, list[str]]:
    processor = BatchProcessor()
    ids = []
    for variant in (answer, lambda p: answer(p).replace("answer 2", "other 2")):
        job = processor.create_job("m", [f"question {i}" for i in range(count)])
        processor.process_batch(job, variant)
        ids.append(job.job_id)
    return processor, ids


async def test_a_failure_group_opens_its_results(tmp_path):
    processor, (job_id, _) = finished_jobs()
    app = TuiBatchApp(processor=processor)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.show_stats(job_id)
        await wait_until(pilot, lambda: app.screen.stats is not None, timeout=10)
        screen = app.screen
        assert isinstance(screen, StatsScreen)
        groups = [(g.reason, g.count) for g in screen.stats.failures]
        # 0, 5, 10, 15, 20, 25 refused (numbers stripped: one group); 7, 14, 21, 28 limited
        assert groups == [
            ("RuntimeError: upstream refused request N after Ns", 6),
            ("RuntimeError: HTTP 429 rate limited", 4),
        ]
        figures = str(screen.query_one("#stats-figures").visual)
        assert "30: 20 succeeded, 10 failed" in figures
        await pilot.press("down", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ResultsScreen)
        assert list(app.screen.indices) == [7, 14, 21, 28]
        assert "reason: RuntimeError: HTTP 429 rate limited" in str(
            app.screen.query_one("#filters").visual
        )
        await pilot.press("a")  # all again
        assert len(app.screen.indices) == 30


async def test_mark_two_jobs_and_compare_them(tmp_path, monkeypatch):
    processor, ids = finished_jobs()
    app = TuiBatchApp(processor=processor)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+b")
        await settle(pilot)
        assert isinstance(app.screen, CheckpointsScreen)
        await pilot.press("c")  # nothing marked: says how
        assert any("Mark two or more" in n.message for n in app._notifications)
        await pilot.press("space", "down", "space", "c")
        await wait_until(pilot, lambda: getattr(app.screen, "summary", None) is not None, 10)
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        states = screen.summary.states
        # 20 succeeded in both; "answer 2" (2, 8, 11, 17, 23, 26, 29) became "other 2"
        assert states == {"identical": 13, "different": 7, "failed": 10}
        await pilot.press("d")
        await settle(pilot)
        assert screen.count == 7
        detail = str(screen.query_one("#compare-detail-text").visual)
        assert "Word diff" in detail and "other" in detail
        counted_on: list[str] = []  # a search reads every answer: never on the UI thread
        count = Comparison.count

        def spy(self, *args, **kwargs):
            counted_on.append(threading.current_thread().name)
            return count(self, *args, **kwargs)

        monkeypatch.setattr(Comparison, "count", spy)
        await pilot.press("slash", *"other 2", "enter")
        await wait_until(pilot, lambda: screen.count == 7, 10)
        assert counted_on and threading.main_thread().name not in counted_on
        await pilot.press("a", "o")  # sorted by length gap: the changed answers first
        await settle(pilot)
        assert screen.order == "length" and screen.row_at(0).state in ("different", "failed")


async def test_the_stats_follow_a_running_job(tmp_path):
    processor = BatchProcessor()
    job = processor.create_job("m", [f"p{i}" for i in range(60)], checkpoint_every=1)
    app = TuiBatchApp(processor=processor, backend_factory=slow_backend(0.05))
    async with app.run_test(size=SIZE) as pilot:
        app.start_job(job)
        await wait_until(pilot, lambda: app.run_state.job.done >= 5)
        await pilot.press("t")
        await wait_until(pilot, lambda: getattr(app.screen, "stats", None) is not None, 10)
        first = app.screen.stats.done
        await wait_until(pilot, lambda: app.screen.stats.done > first + 5, timeout=20)
        app.run_state.cancel.set()
        await app.workers.wait_for_complete()
