"""Job setup and a job file with a matrix: the group is named and how to run it said,
and saving the form keeps the matrix."""

from __future__ import annotations

import json
import re

import pytest
from textual.widgets import DataTable

from tui_batch.core.jobfile import load_job_matrix
from tui_batch.core.processor import BatchProcessor
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.checkpoints import CheckpointsScreen
from tui_batch.ui.screens.compare import CompareScreen
from tui_batch.ui.screens.group import GroupScreen
from tui_batch.ui.screens.results import ResultsScreen

from conftest import EXAMPLES, run_cli
from support.ui import SIZE, ready, settle, wait_until


async def test_a_job_file_with_a_matrix_opens_with_its_group_said_and_saves_it_back(tmp_path):
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    path = tmp_path / "job.toml"
    path.write_text(
        '[input]\nprompts = "p.txt"\n\n[matrix]\ntemperature = [0.0, 0.7]\nseed = [1, 2, 3]\n'
    )
    seen: list = []
    app = TuiBatchApp(path)
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await ready(pilot)

        def said() -> list[str]:
            return [m.notification.message for m in seen if hasattr(m, "notification")]

        await wait_until(pilot, lambda: any("[matrix]" in text for text in said()))
        text = next(text for text in said() if "[matrix]" in text)
        assert "a group of 6 jobs" in text and f"tui-batch run {path}" in text
        app.screen._save_job(tmp_path / "again.toml")
        await settle(pilot)
    assert load_job_matrix(tmp_path / "again.toml") == {
        "temperature": [0.0, 0.7],
        "seed": [1, 2, 3],
    }


@pytest.mark.model
async def test_the_group_screen_ranks_a_matrix_and_opens_results_and_compare(tmp_path):
    """A matrix run with the real model (`tui-batch run`), then its leaderboard from
    Checkpoints (`g`): the variants best first as `stats GROUP` ranks them, `enter` a
    variant's results, two marked and `enter` their compare."""
    done = run_cli(
        "run", str(EXAMPLES / "review_labels.toml"), "--limit", "6", "--threads", "1",
        "--max-tokens", "48", "--matrix", "temperature=0,1", "--seed", "5",
        "--out", str(tmp_path / "labels.csv"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    group_id = re.search(r"Group (g\w+): 2 jobs", done.stderr)[1]
    ranked = json.loads(run_cli("stats", group_id, "--json").stdout)["variants"]
    app = TuiBatchApp()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+b")
        await settle(pilot)
        assert isinstance(app.screen, CheckpointsScreen)
        await pilot.press("g")
        await wait_until(pilot, lambda: getattr(app.screen, "board", None) is not None, 30)
        screen = app.screen
        assert isinstance(screen, GroupScreen)
        assert [v.job_id for v in screen.board.variants] == [v["job_id"] for v in ranked]
        table = screen.query_one("#leaderboard", DataTable)
        assert table.row_count == 2
        best = [str(cell) for cell in table.get_row_at(0)]
        assert ranked[0]["variant"] in best and "best" in best
        assert "ranked by accuracy" in str(screen.query_one("#group-title").visual)
        assert ranked[0]["variant"] in str(screen.query_one("#group-bars").visual)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ResultsScreen) and app.screen.job_id == ranked[0]["job_id"]
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("space", "down", "space", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), 10)
        assert app.screen.job_ids == [ranked[0]["job_id"], ranked[1]["job_id"]]


async def test_a_job_of_no_group_says_so(tmp_path):
    processor = BatchProcessor()
    processor.create_job("m", ["one"])
    app = TuiBatchApp(processor=processor)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+b")
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert isinstance(app.screen, CheckpointsScreen)
        assert any("is not one of a group" in n.message for n in app._notifications)


@pytest.mark.model
async def test_a_job_file_with_a_matrix_runs_its_group_at_once_from_job_setup(tmp_path):
    """ctrl+r on a job file with a [matrix]: a job for each combination, made as one
    group, run at once on the one loaded model, each named by its values."""
    (tmp_path / "p.txt").write_text("Say hi.\nSay bye.\nCount to three.\n")
    path = tmp_path / "job.toml"
    path.write_text(
        '[input]\nprompts = "p.txt"\n\n[model]\nname = "SmolLM2-135M-Instruct.Q4_1"\n'
        "threads = 1\n\n[generation]\nmax_tokens = 12\nseed = 3\n\n"
        "[matrix]\ntemperature = [0.0, 1.0]\n"
    )
    app = TuiBatchApp(path)
    loads: list[str] = []
    app.queue.backends.on_load = loads.append
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: len(app.queue.jobs) == 2, 60)
        assert any("2 jobs, run at once" in n.message for n in app._notifications)
        await wait_until(pilot, lambda: all(e.ended for e in app.queue.jobs), 300)
        await settle(pilot)
    jobs = [entry.run.job for entry in app.queue.jobs]
    assert len({job.group_id for job in jobs}) == 1 and jobs[0].group_id
    assert [job.variant for job in jobs] == ["temperature=0", "temperature=1"]
    assert [job.settings.temperature for job in jobs] == [0.0, 1.0]
    assert all(job.completed == 3 for job in jobs)
    assert len(loads) == 1  # one model, loaded once for both
    group = BatchProcessor().group_jobs(jobs[0].group_id)
    assert sorted(job.job_id for job in group) == sorted(job.job_id for job in jobs)
