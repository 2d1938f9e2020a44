"""The tui-batch Textual app: screens, the batch worker, and app-wide keys."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from pathlib import Path

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from tui_batch.backends.base import Backend
from tui_batch.backends.factory import backend_for_job
from tui_batch.core import events
from tui_batch.core.errors import TuiBatchError
from tui_batch.core.jobs import BatchJob, BatchResult
from tui_batch.core.processor import BatchProcessor
from tui_batch.ui import messages
from tui_batch.ui.commands import TuiBatchCommands
from tui_batch.ui.runner import BatchRun
from tui_batch.ui.screens.checkpoints import CheckpointsScreen
from tui_batch.ui.screens.help import HelpScreen
from tui_batch.ui.screens.modals import ExportScreen, ResumeScreen
from tui_batch.ui.screens.progress import ProgressScreen
from tui_batch.ui.screens.results import ResultsScreen
from tui_batch.ui.screens.setup import SetupScreen

BackendFactory = Callable[[BatchJob], Backend]


class TuiBatchApp(App[None]):
    """Set up a batch, watch it run, browse checkpoints and inspect results."""

    TITLE = "tui-batch"
    CSS_PATH = "tui_batch.tcss"
    COMMANDS = App.COMMANDS | {TuiBatchCommands}
    BINDINGS = [
        Binding("f1,question_mark", "help", "Help"),
        Binding("ctrl+b", "checkpoints", "Checkpoints"),
        Binding("ctrl+g", "progress", "Progress"),
    ]

    def __init__(
        self,
        prompts_file: Path | None = None,
        *,
        processor: BatchProcessor | None = None,
        backend_factory: BackendFactory = backend_for_job,
    ) -> None:
        super().__init__()
        self.prompts_file = prompts_file
        self.processor = processor or BatchProcessor()
        self.backend_factory = backend_factory
        self.run_state: BatchRun | None = None

    def on_mount(self) -> None:
        self.push_screen(SetupScreen(self.prompts_file))

    # Running a job -----------------------------------------------------------------

    def start_job(
        self, job: BatchJob, results: Sequence[BatchResult] = (), retry_failed: bool = False
    ) -> None:
        """Run `job` (whose saved `results` are given) in the worker thread; show progress."""
        if self.run_state is not None and self.run_state.is_active:
            self.notify("A job is already running: cancel it first.", severity="warning")
            return
        if retry_failed:  # failed prompts are pending again, as the engine will treat them
            results = [r for r in results if r.success]
        self.run_state = BatchRun(job, list(results), self.processor.clock)
        # The job's prompts and results are long-lived and free of reference cycles:
        # keep them out of full garbage collections (see runner.FREEZE_EVERY).
        gc.freeze()
        self.run_batch(self.run_state, retry_failed)
        self.action_progress()

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="batch", description="Running batch"
    )
    def run_batch(self, run: BatchRun, retry_failed: bool) -> None:
        job = run.job
        backend = self.backend_factory(job)
        try:
            self.processor.process_batch(
                job,
                backend,
                cancel_event=run.cancel,
                pause_event=run.pause,
                retry_failed=retry_failed,
                on_event=lambda event: self._forward(run, event),
            )
        finally:
            backend.close()
            run.finished = True
        self.post_message(messages.JobFinished(job.job_id, job.status, job.completed, job.failed))

    def _forward(self, run: BatchRun, event: events.BatchEvent) -> None:
        """Worker thread: update the shared state, and tell the UI when it is due."""
        if not run.handle(event):
            return
        job_id = run.job.job_id
        if isinstance(event, events.JobStateChanged):
            self.post_message(messages.JobStateChanged(job_id, event.status, event.reason))
        elif isinstance(event, events.TokensStreamed):
            self.post_message(messages.TokensStreamed(job_id, event.index))
        else:
            self.post_message(messages.ResultFinished(job_id, run.job.done))

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "run_batch" or event.state is not WorkerState.ERROR:
            return
        error = event.worker.error
        run = self.run_state
        text = (
            str(error) if isinstance(error, TuiBatchError) else f"{type(error).__name__}: {error}"
        )
        if run is not None:
            run.finished = True
            run.error = text
            self.post_message(messages.JobError(run.job.job_id, text))

    def on_job_finished(self, message: messages.JobFinished) -> None:
        status = message.status.value
        self.notify(
            f"Job {message.job_id} {status}: {message.completed} ok, {message.failed} failed",
            title="Batch finished",
            severity="warning" if message.failed else "information",
        )
        self.bell()

    def on_job_error(self, message: messages.JobError) -> None:
        self.notify(message.error, title=f"Job {message.job_id} stopped", severity="error")

    def resume_job(self, job_id: str) -> None:
        """Resume a checkpoint, asking first whether its failed prompts run again too."""
        try:
            summary = self.processor.job_summary(job_id)
        except TuiBatchError as exc:
            self.notify(str(exc), severity="error")
            return
        done = summary["completed"] + summary["failed"]
        if summary["failed"] == 0 and done >= summary["total_prompts"]:
            self.notify(f"Job {job_id} is finished: nothing to resume.", severity="warning")
            return

        def answer(retry_failed: bool | None) -> None:
            if retry_failed is not None:
                self._start_saved(job_id, retry_failed)

        if summary["failed"]:
            self.push_screen(ResumeScreen(job_id, summary["failed"]), answer)
        else:
            answer(False)

    def rerun_failed(self, job_id: str) -> None:
        self._start_saved(job_id, retry_failed=True)

    def _start_saved(self, job_id: str, retry_failed: bool) -> None:
        try:
            job, results = self.processor.load_job(job_id)
        except TuiBatchError as exc:
            self.notify(str(exc), severity="error")
            return
        self.start_job(job, results, retry_failed=retry_failed)

    def export_job(self, job_id: str) -> None:
        """Ask for a format and a path, then export in the background."""

        def answer(choice: tuple[str, Path] | None) -> None:
            if choice is not None:
                self.export_in_background(job_id, *choice)

        self.push_screen(ExportScreen(job_id, Path.cwd()), answer)

    @work(thread=True, group="export", exit_on_error=False, description="Exporting results")
    def export_in_background(self, job_id: str, format: str, path: Path) -> None:
        try:
            job, results = self.processor.load_job(job_id)
            written = self.processor.export_results(job, results, path, format)
        except TuiBatchError as exc:
            self.call_from_thread(self.notify, str(exc), title="Export failed", severity="error")
            return
        self.call_from_thread(
            self.notify,
            f"{len(results)} results of {job_id} written to {written}",
            title="Exported",
        )

    # Navigation -------------------------------------------------------------------

    def action_setup(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_checkpoints(self) -> None:
        self._show(CheckpointsScreen, CheckpointsScreen)

    def action_progress(self) -> None:
        if self.run_state is None:
            self.notify("No job has run yet: start one from job setup.", severity="warning")
            return
        self._show(ProgressScreen, lambda: ProgressScreen(self.run_state))

    def show_results(self, job_id: str) -> None:
        self.push_screen(ResultsScreen(job_id))

    def _show(self, kind: type, make: Callable[[], object]) -> None:
        """Go to the screen of this kind already on the stack, else push a new one."""
        for index, screen in enumerate(self.screen_stack):
            if isinstance(screen, kind):
                while len(self.screen_stack) > index + 1:
                    self.pop_screen()
                return
        self.push_screen(make())
