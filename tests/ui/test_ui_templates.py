"""Job setup's template tab and job files, driven by keys: the live preview as the
template is typed, a template job run on the real model, ctrl+s and opening a job file."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import pytest
import tomllib

from tui_batch.core.jobfile import load_job_file
from tui_batch.core.jobs import JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.templates.source import TemplateSource
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.modals import FileBrowserScreen, SaveJobScreen
from tui_batch.ui.screens.progress import ProgressScreen
from tui_batch.ui.widgets.template_editor import TemplateEditor

from conftest import EXAMPLES
from support.ui import SIZE, ready, settle, type_into, wait_until


def reviews(tmp_path: Path, count: int) -> Path:
    with (EXAMPLES / "reviews.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[:count]
    path = tmp_path / "reviews.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["id", "product", "review"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def job_file(tmp_path: Path, count: int = 4) -> Path:
    data = reviews(tmp_path, count)
    text = (EXAMPLES / "job.toml").read_text()
    text = text.replace('"reviews.csv"', f'"{data}"').replace(
        '"review_headline.jinja"', f'"{EXAMPLES / "review_headline.jinja"}"'
    )
    text = text.replace('file = "output/review_headlines.csv"', f'file = "{tmp_path / "out.csv"}"')
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def preview(app: TuiBatchApp) -> str:
    return str(app.screen.query_one("#template-preview").visual)


@pytest.mark.model
async def test_a_job_file_opens_in_setup_and_its_template_job_runs(tmp_path):
    app = TuiBatchApp(job_file(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "4 records, all render" in preview(app), timeout=10)
        setup = app.screen
        assert setup.using_template
        assert setup.query_one("#id-field").value == "id"
        assert "Also from the job file:" in str(setup.query_one("#job-extras").visual)
        text = preview(app)
        assert "record 1 (id r001)" in text and "Review: Boils a full litre" in text
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, ProgressScreen))
        await app.workers.wait_for_complete()
        job = app.run_state.job
        assert job.status is JobStatus.COMPLETED and job.done == 4
        # The rows say which record each is: its id, then its fields.
        row = app.screen._row(0)[2].plain
        assert row.startswith("r001  kettle · Boils a full litre")
        await settle(pilot)  # the job's end: its results file, named in the notification
        said = [n.message for n in app._notifications if "Results:" in n.message]
        assert said and str(tmp_path / "out.csv") in said[-1]
    with (tmp_path / "out.csv").open(encoding="utf-8", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [r["id"] for r in written] == ["r001", "r002", "r003", "r004"]  # as run writes it
    job, results = BatchProcessor().load_job(job.job_id)
    assert job.template.template_file == str(EXAMPLES / "review_headline.jinja")
    assert job.template.id_field == "id" and job.output_file == str(tmp_path / "out.csv")
    assert [p.custom_id for p in job.prompts] == ["r001", "r002", "r003", "r004"]
    assert all(r.success and r.response_text.strip() for r in results)
    assert all(r.tokens_output <= 16 for r in results)  # the front matter's max_tokens


async def test_the_preview_follows_the_template_as_it_is_typed(tmp_path):
    data = reviews(tmp_path, 30)
    app = TuiBatchApp()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        editor = app.screen.query_one(TemplateEditor)
        await wait_until(pilot, lambda: editor.has_focus, timeout=5)
        await type_into(pilot, "#data-path", str(data))
        await wait_until(pilot, lambda: "30 records, all render" in preview(app), timeout=10)

        editor.focus()
        await pilot.press("ctrl+a", *"Stars: {{ stars }}")  # ctrl+a: select all, replaced
        await wait_until(pilot, lambda: "cannot be rendered" in preview(app), timeout=10)
        text = preview(app)
        assert "30 of 30 records cannot be rendered" in text
        assert "record 1: no 'stars' (the template uses it; the record has: id, product, r" in text
        assert "… 25 more" in text
        assert editor._highlights  # the tag is highlighted

        editor.load_text("{% if review %}{{ review | upper }}")  # never closed
        await wait_until(pilot, lambda: "template, line 1" in preview(app), timeout=10)

        editor.load_text("{{ product }}: {{ review }}")
        await type_into(pilot, "#id-field", "sku")
        await wait_until(pilot, lambda: "no id column 'sku'" in preview(app), timeout=10)
        await pilot.press("ctrl+r")  # refused, with the reason
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert not isinstance(app.screen, ProgressScreen)
        assert BatchProcessor().list_checkpoints() == []


async def test_ctrl_s_saves_what_the_form_says_and_it_loads_back(tmp_path):
    path = job_file(tmp_path)
    app = TuiBatchApp(path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "all render" in preview(app), timeout=10)
        await type_into(pilot, "#max_tokens", "9")
        await type_into(pilot, "#system", "Be brief.")
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, SaveJobScreen)
        saved = tmp_path / "saved" / "again.toml"
        await type_into(pilot, "#job-path", str(saved))
        await pilot.press("enter")
        await settle(pilot)
    first, second = load_job_file(path), load_job_file(saved)
    assert second.pop("max_tokens") == 9 and second.pop("system_prompt") == "Be brief."
    assert second.pop("temperature") == 0.0  # the form's field, written out
    assert second.pop("seed", None) is None and second.pop("threshold", None) is None
    first.pop("temperature")
    assert second.pop("error_strategy") == first.pop("error_strategy")
    assert second.pop("retries") == first.pop("retries")
    assert second.pop("batch_invariant") is False and second.pop("n_gpu_layers") == 0
    assert second.pop("repeats") == 1
    assert second == first  # template, data, id, model, n_ctx, threads, output: as loaded
    assert "# tui-batch job file" in saved.read_text()
    assert tomllib.loads(saved.read_text())["model"]["name"] == "SmolLM2-135M-Instruct.Q4_1"


async def test_ctrl_o_opens_a_job_file_and_a_bad_one_changes_nothing(tmp_path):
    good = job_file(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("[generation]\nmax_tokens = 'lots'\n")
    seen: list = []
    app = TuiBatchApp()
    async with app.run_test(size=SIZE, notifications=True, message_hook=seen.append) as pilot:
        await ready(pilot)
        await type_into(pilot, "#max_tokens", "33")
        app.screen.load_job(bad)
        await settle(pilot)
        assert app.screen.query_one("#max_tokens").value == "33"
        assert any("line 2: generation.max_tokens" in n.message for n in app._notifications)

        await type_into(pilot, "#prompts-path", str(tmp_path))
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, FileBrowserScreen)
        await settle(pilot)
        tree = app.screen.query_one("PromptFileTree")
        names = [node.data.path.name for node in tree.root.children]
        assert "job.toml" in names and "reviews.csv" in names
        tree.move_cursor(tree.root.children[names.index("job.toml")])
        await pilot.press("enter")
        await wait_until(pilot, lambda: "4 records, all render" in preview(app), timeout=10)
        assert app.screen.query_one("#max_tokens").value == "256"  # the job file's default
        assert app.screen.job_file == good


async def test_resuming_a_job_whose_data_changed_asks_first(tmp_path, monkeypatch):
    from tui_batch.core.backend import CallableBackend
    from tui_batch.core.templates.render import render_prompts
    from tui_batch.core.templates.template import PromptTemplate
    from tui_batch.ui.screens.modals import ConfirmScreen

    data = reviews(tmp_path, 5)
    rendered = render_prompts(PromptTemplate("{{ review }}"), data, id_field="id")
    processor = BatchProcessor()
    job = processor.create_job("m", rendered.prompts, template=rendered.source)
    with data.open("a", encoding="utf-8") as out:
        out.write("r900,kettle,Added later.\n")
    hashed_on: list[str] = []  # a data file may be a GB: never hashed on the UI thread
    changes = TemplateSource.changes

    def spy(self):
        hashed_on.append(threading.current_thread().name)
        return changes(self)

    monkeypatch.setattr(TemplateSource, "changes", spy)
    app = TuiBatchApp(processor=processor, backend_factory=lambda job: CallableBackend(str.upper))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.resume_job(job.job_id)
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=5)
        assert hashed_on and threading.main_thread().name not in hashed_on
        assert "the data file" in str(app.screen.query_one(".question").visual)
        await pilot.press("n")  # nothing runs
        await settle(pilot)
        assert app.run_state is None
        app.resume_job(job.job_id)
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=5)
        await pilot.press("y")
        await wait_until(pilot, lambda: app.run_state is not None, timeout=10)
        await app.workers.wait_for_complete()
        assert app.run_state.job.done == 5  # the stored prompts, not the added record


@pytest.mark.model
async def test_the_preview_names_records_longer_than_the_context(tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [{"t": "short"}, {"t": "word " * 300}, {"t": "fine"}, {"t": "lorem ipsum " * 200}]
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    app = TuiBatchApp()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await pilot.pause()
        app.screen.query_one(TemplateEditor).load_text("Say: {{ t }}")
        await type_into(pilot, "#n_ctx", "256")
        await type_into(pilot, "#data-path", str(data))
        expected = "2 do not fit the context (256 tokens, the chat template included) and will fail: records 2, 4"
        await wait_until(pilot, lambda: expected in preview(app), timeout=20)


def test_job_setup_covers_every_setting_by_construction():
    """Each setting is a field of job setup or kept from the job file (never dropped):
    the form's fields name only real settings, and the rest are derived from the table."""
    from tui_batch.core.setting_table import SETTINGS
    from tui_batch.ui.screens.setup_job import EXTRA_KEYS, FORM_FIELDS

    names = {s.name for s in SETTINGS}
    assert FORM_FIELDS - names == {"threshold"}  # error strategy's N, typed on its own
    assert set(EXTRA_KEYS) | (FORM_FIELDS & names) == names
    assert not set(EXTRA_KEYS) & FORM_FIELDS
