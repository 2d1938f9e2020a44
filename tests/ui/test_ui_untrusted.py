"""The dashboard with untrusted text and files: markup and escape sequences from job
files and servers shown literally, outputs that need the user's say-so, a key typed in
the wrong field; and the smaller promises a person meets (the terminal left with the
resume command, resume offered only where there is something to resume, a folder up in
the file browser, the way out of the template editor, a small terminal)."""

from __future__ import annotations

import json
from pathlib import Path

from textual.command import CommandList

from tui_batch.core.backend import CallableBackend
from tui_batch.core.processor import BatchProcessor
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.checkpoints import CheckpointsScreen
from tui_batch.ui.screens.modals import ConfirmScreen, FileBrowserScreen, SaveJobScreen
from tui_batch.ui.screens.progress import ProgressScreen
from tui_batch.ui.screens.setup import SetupScreen

from conftest import EXAMPLES
from support.fake_server import FakeServer
from support.pty_session import PtySession
from support.ui import SIZE, palette_hits, prompts_file, ready, settle, type_into, wait_until

MARKUP = "[/x] [bold]b[/bold]"
ESCAPES = "\x1b]0;owned\x07\x1b[2J\u202e"


def messages(app: TuiBatchApp) -> list[str]:
    return [n.message for n in app._notifications]


async def test_markup_in_a_job_files_key_is_a_message_not_a_crash(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[input]\nprompts = "p.txt"\n"{MARKUP}" = 1\n')
    app = TuiBatchApp(bad)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert isinstance(app.screen, SetupScreen)  # still running
        said = [m for m in messages(app) if "unknown key" in m]
        assert said and MARKUP in said[0] and "known in [input]: prompts" in said[0]
        app.notify(f"{ESCAPES} {MARKUP}", title=MARKUP)  # any caller, any text: literal
        await settle(pilot)
        assert "\\x1b]0;owned\\x07" in messages(app)[-1] and "\x1b" not in messages(app)[-1]


async def test_a_servers_hostile_model_name_is_shown_literally_everywhere(tmp_path):
    name = f"{MARKUP}{ESCAPES}"
    with FakeServer(model=name) as fake:
        app = TuiBatchApp(prompts_file(tmp_path, count=2, long_one=False))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            setup = app.screen
            setup.query_one("#run-on").value = "server"
            await type_into(pilot, "#servers", fake.url)
            await pilot.press("f5")
            await wait_until(pilot, lambda: setup.query_one("#server-model").value == name)
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: isinstance(app.screen, ProgressScreen))
            await wait_until(pilot, lambda: app.run_state.finished, timeout=30)
            await settle(pilot)
            shown = [app.export_screenshot()]
            await pilot.press("r")  # results
            await settle(pilot)
            shown.append(app.export_screenshot())
            await pilot.press("ctrl+b")  # checkpoints
            await settle(pilot)
            shown.append(app.export_screenshot())
            await pilot.press("ctrl+p", *"results")  # the palette's help line holds the name
            # The palette searches as it likes (its own tasks): wait for its hits.
            await wait_until(pilot, lambda: palette_hits(app) > 0)
            await settle(pilot)
            shown.append(app.export_screenshot())
            await pilot.press("escape")
    for screen in shown:
        text = screen.replace("&#160;", " ")
        assert "[/x]" in text and "\\x1b]0;owned\\x07" in text
        assert "\x1b" not in text and "\x07" not in text


async def test_a_job_files_output_outside_its_folder_is_written_only_when_confirmed(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "p.txt").write_text("one\ntwo\n")
    outside = tmp_path / "elsewhere.csv"
    job = folder / "job.toml"
    job.write_text(f'[input]\nprompts = "p.txt"\n[output]\nfile = "{outside}"\n')
    app = TuiBatchApp(job, backend_factory=lambda job: CallableBackend(str.upper))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert str(outside) in str(app.screen.query_one(".question").visual)
        await pilot.press("n")
        await settle(pilot)
        assert app.run_state is None and BatchProcessor().job_summaries() == []
        await pilot.press("ctrl+r")
        await settle(pilot)
        await pilot.press("y")
        await wait_until(pilot, lambda: app.run_state is not None and app.run_state.finished)
        await settle(pilot)
    assert outside.read_text().splitlines()[1].startswith("0,one,ONE")


async def test_a_results_file_may_not_replace_an_input(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\n")
    job = tmp_path / "job.toml"
    job.write_text('[input]\nprompts = "p.txt"\n[output]\nfile = "p.txt"\n')
    app = TuiBatchApp(job, backend_factory=lambda job: CallableBackend(str.upper))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert any("is a file this run reads" in m for m in messages(app))
        assert app.run_state is None
    assert prompts.read_text() == "one\n"


async def test_a_key_typed_as_the_key_variable_is_never_saved(tmp_path):
    key = "sk-proj-0123456789abcdef"
    app = TuiBatchApp(prompts_file(tmp_path, long_one=False))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.screen.query_one("#run-on").value = "server"
        await type_into(pilot, "#servers", "http://127.0.0.1:9/v1")
        await type_into(pilot, "#server-model-name", "m")
        await type_into(pilot, "#api-key-env", key)
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, SaveJobScreen)
        saved = tmp_path / "job.toml"
        await type_into(pilot, "#job-path", str(saved))
        await pilot.press("enter")
        await settle(pilot)
        said = [m for m in messages(app) if "API key variable" in m]
        assert said and key not in said[-1] and not any(key in m for m in messages(app))
    assert not saved.exists()


async def test_resume_is_offered_where_there_is_something_to_resume(tmp_path):
    processor = BatchProcessor()
    done = processor.create_job("m", ["a"], job_id="done-job")
    processor.process_batch(done, str.upper)
    processor.create_job("m", ["a", "b"], job_id="stopped-job")
    app = TuiBatchApp(processor=processor)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p", *"job: resume")
        await wait_until(pilot, lambda: palette_hits(app) > 0)
        offered = [str(option.prompt) for option in app.screen.query_one(CommandList)._options]
        assert any("resume stopped-job" in o for o in offered)
        assert not any("resume done-job" in o for o in offered)
        await pilot.press("escape")
        await pilot.press("ctrl+b")
        await settle(pilot)
        assert isinstance(app.screen, CheckpointsScreen)
        table = app.screen.query_one("#checkpoints")
        statuses = {
            str(table.get_row(key)[0]).strip(): str(table.get_row(key)[4]) for key in table.rows
        }
        assert statuses == {"stopped-job": "pending · resumable", "done-job": "completed"}


async def test_the_file_browser_goes_up_a_folder(tmp_path):
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    app = TuiBatchApp()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await type_into(pilot, "#prompts-path", f"{inner}/")
        await pilot.press("ctrl+o")
        await settle(pilot)
        browser = app.screen
        assert isinstance(browser, FileBrowserScreen)
        await pilot.press("backspace", "backspace")
        await settle(pilot)
        assert Path(browser.query_one("PromptFileTree").path) == tmp_path
        assert str(tmp_path) in str(browser.query_one("#browser-folder").visual)


async def test_the_template_editor_says_how_to_leave_it_and_fits_a_small_terminal():
    from textual.widgets._footer import FooterKey

    app = TuiBatchApp(EXAMPLES / "job.toml")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await wait_until(pilot, lambda: app.screen.query_one("#template-editor").has_focus)
        await settle(pilot)
        keys = {k.description: k.key for k in app.screen.query(FooterKey)}
        assert keys.get("Leave editor (tab indents)") == "escape"
        preview = app.screen.query_one("#template-preview")
        assert preview.region.height >= 5 and preview.region.bottom <= 23  # on the screen
        await pilot.press("escape")
        assert not app.screen.query_one("#template-editor").has_focus


def test_quitting_mid_job_prints_how_to_resume(tmp_path, demo_model):
    data = tmp_path / "data"
    (data / "config").mkdir(parents=True)
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"Tell a long story about {n}.\n" for n in range(8)))
    setup = {"prompts_path": str(prompts), "input": "prompts", "max_tokens": "200",
             "n_threads": "1", "model": str(demo_model)}  # fmt: skip
    (data / "config" / "last_setup.json").write_text(json.dumps(setup))
    with PtySession(env={"TUI_BATCH_DATA_DIR": str(data)}) as app:
        app.wait_for("Job setup")
        app.press("ctrl+r")
        app.wait_for("Generating: prompt", timeout=120)
        app.press("ctrl+q")
        app.wait_for("Stop it and quit?")
        app.press("s")
        assert app.process.wait(60) == 0
        app.wait_for("Resume with: tui-batch resume")
    (job,) = [s for s in BatchProcessor(data / "checkpoints").job_summaries() if s.status.value]
    assert job.status.value == "cancelled" and job.resumable
    assert f"tui-batch resume {job.job_id}" in app.text()
