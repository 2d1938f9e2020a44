"""Structured answers in the dashboard, on the real demo model: a schema typed in job setup
with its live preview, a run, the invalid filter and the detail pane, the stats."""

from __future__ import annotations

import json

import pytest

from tui_batch.core.jobs import JobStatus
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.progress import ProgressScreen
from tui_batch.ui.screens.results import ResultsScreen
from tui_batch.ui.screens.stats import StatsScreen

from support.ui import SIZE, type_into, wait_until

SCHEMA = "sentiment: positive|negative|neutral, stars: int 1..5"
REVIEWS = [
    ("Boils fast and the shut-off works every time.", 80),
    ("The lid snapped after two weeks.", 5),  # cut off: invalid
    ("Quiet, fast, and the blue light is nice.", 80),
    ("Water tastes of plastic.", 5),
]


def requests(tmp_path):
    """An OpenAI batch file: each review with its own max tokens."""
    path = tmp_path / "reviews.jsonl"
    lines = [
        {
            "custom_id": f"r{i}",
            "body": {"messages": [{"role": "user", "content": text}], "max_tokens": tokens},
        }
        for i, (text, tokens) in enumerate(REVIEWS)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def shown(app, selector: str) -> str:
    return str(app.screen.query_one(selector).visual)


@pytest.mark.model
async def test_a_schema_typed_in_setup_runs_and_its_answers_are_shown(tmp_path):
    app = TuiBatchApp(requests(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)
        setup = app.screen
        await type_into(pilot, "#n_threads", "1")
        setup.query_one("#answer-kind").value = "schema"
        await pilot.pause()
        await type_into(pilot, "#schema", "sentiment: positive|negative, stars: integr")
        await wait_until(pilot, lambda: "unknown type 'integr'" in shown(app, "#schema-preview"))
        await pilot.press("ctrl+r")  # refused, with the reason
        await pilot.pause(0.2)
        assert app.run_state is None
        assert any("unknown type" in n.message for n in app._notifications)
        await type_into(pilot, "#schema", SCHEMA)
        await wait_until(pilot, lambda: "JSON Schema" in shown(app, "#schema-preview"))
        assert '"stars": {"type": "integer", "minimum": 1, "maximum": 5}' in shown(
            app, "#schema-preview"
        )

        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, ProgressScreen))
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        job = app.run_state.job
        assert job.status is JobStatus.COMPLETED and job.settings.schema.source == SCHEMA
        line = shown(app, "#job-line")
        assert "answers " + SCHEMA in line and "enforced while decoding" in line
        assert "2 invalid" in shown(app, "#stats")

        await pilot.press("r")
        assert isinstance(app.screen, ResultsScreen)
        assert "invalid (2)" in shown(app, "#filters")
        await pilot.press("i")
        results = app.screen
        assert results.query_one("#results").count == 2
        assert [results.result_at(n).prompt_index for n in range(2)] == [1, 3]
        detail = shown(app, "#detail-text")
        assert "invalid" in detail and "Invalid: the answer breaks the schema" in detail
        assert "cut off at max tokens: raise max tokens" in detail
        assert detail.count("invalid: cut off at max tokens") == 2  # the runs before, kept

        await pilot.press("a")
        detail = shown(app, "#detail-text")
        assert "Answer" in detail and "sentiment" in detail and "stars" in detail

        await pilot.press("t")
        assert isinstance(app.screen, StatsScreen)
        await wait_until(pilot, lambda: app.screen.stats is not None, timeout=10)
        figures = shown(app, "#stats-figures")
        assert "2 valid, 2 invalid (50.0% valid)" in figures
        assert "sentiment (valid answers)" in figures
