"""A thinking model in the dashboard: job setup's reasoning fields saved and loaded, the
job run on the real (thinking) model, the thought dimmed beside the answer on the
progress screen, folded under the answer in the results' detail pane and opened by `h`."""

from __future__ import annotations

import pytest

from tui_batch.core import events
from tui_batch.core.processor import BatchProcessor
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.run_state import RunState
from tui_batch.ui.screens.progress import ProgressScreen
from tui_batch.ui.screens.results import ResultsScreen

from support.thinking_model import make_thinking_model
from support.ui import SIZE, settle, wait_until


def job_file(tmp_path, model) -> object:
    prompts = tmp_path / "p.txt"
    prompts.write_text("What is 2+2?\nName a colour.\n")
    path = tmp_path / "job.toml"
    path.write_text(
        f'[input]\nprompts = "{prompts}"\n[model]\nname = "{model}"\nthreads = 1\n'
        "[generation]\nmax_tokens = 40\nreasoning_budget = 8\n"
    )
    return path


@pytest.mark.model
async def test_a_thought_is_shown_dimmed_folded_and_opened(tmp_path):
    model = make_thinking_model(tmp_path, opens=True)
    app = TuiBatchApp(job_file(tmp_path, model))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.query("#reasoning_budget"), timeout=10)
        assert app.screen.query_one("#reasoning_budget").value == "8"  # from the job file
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, ProgressScreen))
        await app.workers.wait_for_complete()
        await settle(pilot)
        job, results = BatchProcessor().load_job(app.run_state.job.job_id)
        assert job.settings.reasoning_budget == 8
        first = results[0]
        assert first.reasoning and first.reasoning_tokens == 8
        await pilot.press("down", "up")  # the first prompt's row: its result shown
        shown = app.screen.query_one("#live-text")
        await wait_until(pilot, lambda: first.reasoning.strip()[:20] in str(shown.visual), 10)
        live = shown.visual
        assert any("dim" in str(span.style) for span in live.spans)  # the thought, dimmed
        await pilot.press("r")
        assert isinstance(app.screen, ResultsScreen)
        await settle(pilot)
        detail = str(app.screen.query_one("#detail-text").visual)
        assert "Thought, 8 tokens" in detail
        assert detail.index("Response") < detail.index("Thought")  # under the answer
        await pilot.press("h")
        opened = str(app.screen.query_one("#detail-text").visual)
        assert first.reasoning.strip() in opened and "(h: open)" not in opened


def test_streamed_thought_and_answer_are_kept_apart_while_a_prompt_runs():
    job = BatchProcessor().create_job("m", ["a"])
    state = RunState(job)
    state.handle(events.PromptStarted(0, 1))
    state.handle(events.TokensStreamed(0, "let me see", True))
    state.handle(events.TokensStreamed(0, "Blue.", False))
    assert state.live() == (0, "let me see", "Blue.")
