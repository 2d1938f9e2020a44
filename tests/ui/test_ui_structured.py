"""Structured answers in the dashboard, on the real demo model: a schema typed in job setup
with its live preview, a run, the invalid filter and the detail pane, the stats."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Static

from tui_batch.core.jobs import JobStatus
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.progress import ProgressScreen
from tui_batch.ui.screens.results import ResultsScreen
from tui_batch.ui.screens.stats import StatsScreen

from support.ui import SIZE, ready, settle, type_into, wait_until

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
        await ready(pilot)
        setup = app.screen
        await type_into(pilot, "#n_threads", "1")
        setup.query_one("#answer-kind").value = "schema"
        await pilot.pause()
        await type_into(pilot, "#schema", "sentiment: positive|negative, stars: integr")
        await wait_until(pilot, lambda: "unknown type 'integr'" in shown(app, "#schema-preview"))
        await pilot.press("ctrl+r")  # refused, with the reason
        await settle(pilot)
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
        await settle(pilot)
        job = app.run_state.job
        assert job.status is JobStatus.COMPLETED and job.settings.schema.source == SCHEMA
        line = shown(app, "#job-line")
        assert "answers " + SCHEMA in line and "enforced while decoding" in line
        await wait_until(pilot, lambda: "2 invalid" in shown(app, "#stats"), 10)  # next tick

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


async def test_scores_by_keys_wrong_filter_matrix_cells_and_regressions(tmp_path):
    """The dashboard's keys over two scored jobs: `w` in the results, the stats screen's
    confusion matrix walked by arrows and opened by enter, `r` in the compare screen."""
    from tui_batch.core.jobs import Prompt
    from tui_batch.core.processor import BatchProcessor
    from tui_batch.core.run_spec import RunSpec
    from tui_batch.ui.screens.compare import CompareScreen

    processor = BatchProcessor()
    spec = RunSpec.from_values({"choices": "yes,no", "expect": "label", "invalid_retries": "0"})
    prompts = [Prompt(f"q{n}", custom_id=f"q{n}", variables={"label": label})
               for n, label in enumerate(["yes", "yes", "no", "no", "yes"])]  # fmt: skip
    for job_id, answers in (("a", ["yes", "no", "no", "no", "yes"]),
                            ("b", ["no", "yes", "no", "yes", "yes"])):  # fmt: skip
        job = processor.create_job("m", prompts, job_id=job_id, spec=spec)
        replies = iter(answers)
        processor.process_batch(job, lambda _, replies=replies: next(replies))
    app = TuiBatchApp(processor=processor)
    async with app.run_test(size=SIZE) as pilot:
        app.show_results("b")
        await settle(pilot)
        assert "wrong (2)" in shown(app, "#filters")
        await pilot.press("w")
        await settle(pilot)
        results = app.screen
        assert list(results.indices) == [0, 3]
        detail = shown(app, "#detail-text")
        assert "Expected" in detail and "yes" in detail and "Word diff" in detail
        results.action_open()  # the full view (enter) says as much as the pane
        await pilot.pause()
        full = str(app.screen.query_one(Static).visual)
        assert "Expected" in full and "Word diff" in full and "wrong" in full.lower()
        await pilot.press("escape")
        await pilot.press("escape")

        app.show_stats("b")
        await wait_until(pilot, lambda: app.screen.stats is not None)
        matrix = app.screen.query_one("#confusion")
        assert "accuracy 3/5 right" in shown(app, "#stats-figures")
        assert matrix.has_focus
        assert [str(matrix.get_cell_at((r, c))) for r in range(2) for c in range(1, 3)] == [
            "2", "1", "1", "1"
        ]  # fmt: skip
        assert matrix.cursor_coordinate == (0, 1)  # on the matrix, not on a row's label
        await pilot.press("right", "enter")  # expected yes, answered no
        await settle(pilot)
        assert isinstance(app.screen, ResultsScreen) and list(app.screen.indices) == [0]
        assert "expected yes, answered no" in shown(app, "#filters")
        await pilot.press("escape", "escape")

        app.push_screen(CompareScreen(["a", "b"]))
        await wait_until(pilot, lambda: app.screen.summary is not None)
        assert "regressions 2" in shown(app, "#compare-summary")
        await pilot.press("r")
        await settle(pilot)
        compare = app.screen
        rows = [compare.row_at(n) for n in range(compare.count)]
        assert [(row.key, row.regression) for row in rows] == [
            ("q0", True), ("q3", True), ("q1", False), ("q2", False), ("q4", False)
        ]  # fmt: skip
        # Regressions first only reorders: every filter still shows all it holds.
        identical = compare.summary.states.get("identical", 0)
        await pilot.press("i")
        await settle(pilot)
        assert compare.count == identical == 2
        assert [compare.row_at(n).key for n in range(2)] == ["q2", "q4"]
        await pilot.press("a")
        await settle(pilot)
        assert compare.count == 5 and compare.row_at(0).key == "q0"
        await pilot.press("r")
        await settle(pilot)
        assert compare.count == 5 and compare.row_at(0).key == "q0"


async def test_a_matrix_whose_labels_are_named_like_its_headings_is_drawn():
    """Labels called `expected` and `F1` (the matrix's own headings) once left it empty."""
    from tui_batch.core.jobs import Prompt
    from tui_batch.core.processor import BatchProcessor
    from tui_batch.core.run_spec import RunSpec

    processor = BatchProcessor()
    spec = RunSpec.from_values(
        {"choices": "expected,F1,precision", "expect": "label", "invalid_retries": "0"}
    )
    labels = ["expected", "F1", "precision", "F1"]
    prompts = [Prompt(f"q{n}", variables={"label": label}) for n, label in enumerate(labels)]
    job = processor.create_job("m", prompts, job_id="named", spec=spec)
    replies = iter(["expected", "F1", "F1", "F1"])
    processor.process_batch(job, lambda _: next(replies))
    app = TuiBatchApp(processor=processor)
    async with app.run_test(size=SIZE) as pilot:
        app.show_stats("named")
        await wait_until(pilot, lambda: app.screen.stats is not None)
        matrix = app.screen.query_one("#confusion")
        assert matrix.row_count == 3
        cells = [[str(matrix.get_cell_at((r, c))) for c in range(4)] for r in range(3)]
        assert cells == [
            ["expected", "1", "0", "0"],
            ["F1", "0", "2", "0"],
            ["precision", "0", "1", "0"],
        ]
