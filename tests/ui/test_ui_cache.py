"""The answer cache in the dashboard: chosen in job setup and remembered, a second run
served whole on the real demo model, marked in the results and sized in the checkpoints'
footer."""

from __future__ import annotations

import pytest
from textual.widgets import Select, Static

from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.last_setup import load_last_setup
from tui_batch.ui.screens.checkpoints import CheckpointsScreen
from tui_batch.ui.screens.modals import ResultScreen
from tui_batch.ui.screens.progress import ProgressScreen
from tui_batch.ui.screens.results import ResultsScreen
from tui_batch.ui.screens.setup import SetupScreen

from support.ui import SIZE, ready, settle, wait_until


@pytest.mark.model
async def test_a_second_run_is_served_from_the_cache_chosen_in_setup(tmp_path):
    (tmp_path / "p.txt").write_text("I love it.\nI hate it.\nIt is fine.\n")
    job_file = tmp_path / "job.toml"
    job_file.write_text(
        '[input]\nprompts = "p.txt"\n[model]\nthreads = 1\n'
        '[generation]\nchoices = ["positive", "negative", "neutral"]\n'
    )
    app = TuiBatchApp(job_file)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert isinstance(app.screen, SetupScreen)
        app.screen.query_one("#cache", Select).value = "read-write"
        runs = []
        for _ in range(2):
            await pilot.press("ctrl+r")
            await wait_until(
                pilot,
                lambda: (
                    app.run_state is not None
                    and app.run_state not in runs
                    and app.run_state.finished
                ),
            )
            runs.append(app.run_state)
            await app.workers.wait_for_complete()
            await settle(pilot)
            assert isinstance(app.screen, ProgressScreen)
            if len(runs) == 1:
                await pilot.press("escape")
                await wait_until(pilot, lambda: isinstance(app.screen, SetupScreen))
        first, second = runs
        assert first.cache_note == "cache: 0 of 3 answers served, 3 to run"
        assert second.cache_note == "cache: 3 of 3 answers served, 0 to run"
        assert "3 of 3 answers served" in str(app.screen.query_one("#job-line").visual)
        assert all(r.cached_from == first.job.job_id for r in second.results.values())

        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ResultsScreen))
        results = app.screen
        await settle(pilot)
        assert [results._row(i)[-1].plain for i in range(3)] == ["cached"] * 3
        await pilot.press("enter")
        assert isinstance(app.screen, ResultScreen)
        assert "Served from the answer cache" in str(app.screen.query_one(Static).visual)
        await pilot.press("escape")

        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: isinstance(app.screen, CheckpointsScreen))
        assert "answer cache" in str(app.screen.query_one("#checkpoint-info").visual)
    assert load_last_setup().job["cache"] == "read-write"
