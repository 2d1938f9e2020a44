"""A Batch API job in the dashboard, driven by keys against the test Batch API server:
chosen in job setup, its batches shown on the progress screen, `x` asking before it
cancels them at the provider, and the job resumed to its end with each prompt answered
once."""

from __future__ import annotations

from collections import Counter

from rich.text import Text

from tui_batch.backends.remote.batch_backend import BatchApiBackend
from tui_batch.core.batch_records import BatchRecords
from tui_batch.core.jobs import JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.modals import ConfirmScreen
from tui_batch.ui.screens.progress import ProgressScreen
from tui_batch.ui.screens.setup import SetupScreen

from support.batch_api_server import BatchApiServer
from support.ui import SIZE, prompts_file, ready, wait_until


def _text(widget) -> str:
    content = widget.render()
    return content.plain if isinstance(content, Text) else str(content)


async def test_a_batch_job_from_setup_shown_cancelled_on_x_then_resumed(tmp_path):
    with BatchApiServer(validating=0.05, finalizing=0.05, workers=1, line_delay=0.3) as server:
        # A job file with the servers, and polls quick enough for a test (30 s unless told)
        job_file = tmp_path / "job.toml"
        prompts = prompts_file(tmp_path, count=8, long_one=False)
        job_file.write_text(
            f'[input]\nprompts = "{prompts}"\n[model]\nname = "m"\n'
            f'[server]\nurls = ["{server.url}"]\n[run]\nbatch_poll = 0.1\nbatch_poll_most = 0.3\n',
            encoding="utf-8",
        )
        app = TuiBatchApp(job_file)
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            setup = app.screen
            assert isinstance(setup, SetupScreen) and setup.on_servers
            assert setup.query_one("#send").value == "live"
            setup.query_one("#send").focus()
            await pilot.press("enter", "down", "enter")
            await pilot.pause()
            assert setup.query_one("#send").value == "batch"
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: isinstance(app.screen, ProgressScreen))
            progress = app.screen
            panel = progress.query_one("#server-panel")
            await wait_until(pilot, lambda: "in_progress" in _text(panel))
            shown = _text(panel)
            assert shown.startswith("Batch API") and "batch 1 (batch-" in shown
            assert "of 8 done" in shown and "left" in shown
            await wait_until(pilot, lambda: any(b.completed >= 2 for b in server.batches.values()))
            await pilot.press("x")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "cancelled at the provider" in app.screen.question
            await pilot.press("y")
            await wait_until(pilot, lambda: app.run_state.finished, timeout=60)
            job_id = app.run_state.job.job_id
            assert app.run_state.job_status is JobStatus.CANCELLED
        (batch,) = server.batches.values()
        assert batch.status in ("cancelling", "cancelled")
        processor = BatchProcessor()
        job = processor.open_job(job_id)
        assert job.server is not None and job.server.batch_api
        (record,) = BatchRecords(job.checkpoint_file).files()
        assert record.status in ("cancelling", "cancelled")
        backend = BatchApiBackend(job.server, job.model_id)
        processor.process_batch(job, backend)
        backend.close()
        assert job.status is JobStatus.COMPLETED and job.completed == 8
        answered = Counter(int(line.split(":")[1]) for line in server.answers.elements())
        assert answered == Counter(dict.fromkeys(range(8), 1))
