"""The tui-batch Textual app: screens, the batch worker, and app-wide keys."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.worker import Worker, WorkerState

from tui_batch.backends.factory import backend_for_job
from tui_batch.core.backend import Backend, describe_error
from tui_batch.core.errors import TuiBatchError
from tui_batch.core.jobs import BatchJob, JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompt_stream import PromptStream, reopen_stream
from tui_batch.core.rows import JobSummary
from tui_batch.core.scoring.figures import ConfusionCell
from tui_batch.core.stored import StoredResults, result_counts
from tui_batch.core.text import escape_controls
from tui_batch.ui import messages
from tui_batch.ui.commands import TuiBatchCommands
from tui_batch.ui.run_state import RunState
from tui_batch.ui.screens.checkpoints import CheckpointsScreen
from tui_batch.ui.screens.help import HelpScreen
from tui_batch.ui.screens.modals import ConfirmScreen, ExportScreen, QuitScreen, ResumeScreen
from tui_batch.ui.screens.progress import ProgressScreen
from tui_batch.ui.screens.results import ResultsScreen
from tui_batch.ui.screens.setup import SetupScreen
from tui_batch.ui.stop_signals import StopSignals

BackendFactory = Callable[[BatchJob], Backend]
# The job's model, which the engine loads only if a prompt is left to run.
job_backend: BackendFactory = partial(backend_for_job, opened=False)


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
        backend_factory: BackendFactory = job_backend,
    ) -> None:
        super().__init__()
        self.prompts_file = prompts_file
        self.processor = processor or BatchProcessor()
        self.backend_factory = backend_factory
        self.run_state: RunState | None = None
        # True from a job's start until its worker has ended (and saved).
        self.batch_active = False
        # Set when the app is to exit once the running job has stopped: the exit status.
        self.exit_after_job: int | None = None
        self.stop_requested = False
        # Set while no job's worker runs: it has stopped, and saved.
        self.batch_ended = threading.Event()
        self.batch_ended.set()
        self.stop_signals = StopSignals(self)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Every notification shows its text literally, whoever calls it (screens call
        through here): messages carry file paths, column names, job ids and servers'
        words, which are data; `[/x]` in one once ended the app. `markup` is ignored."""
        super().notify(
            escape_controls(message),
            title=escape_controls(title),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    def on_mount(self) -> None:
        self.push_screen(SetupScreen(self.prompts_file))
        self.stop_signals.install()

    def on_unmount(self) -> None:
        self.stop_signals.remove()

    # Running a job -----------------------------------------------------------------

    def start_job(self, job: BatchJob, stream: PromptStream | None = None) -> None:
        """Run a new job in the worker thread and show its progress at once; a job made
        from the first chunk of its input (`create_streamed_job`) reads the rest from
        `stream`."""
        if self._claim():
            self.run_state = RunState(job, self.processor.clock)
            self.run_batch(job, job.job_id, False, stream)
            self.action_progress()

    def start_saved(self, job_id: str, retry_failed: bool) -> None:
        """Resume a saved job: it is read once, in the worker, which then shows its
        progress."""
        if self._claim():
            self.notify(f"Loading job {job_id}…")
            self.run_batch(None, job_id, retry_failed)

    def _claim(self) -> bool:
        """Whether a job may start now (one runs at a time); if so, one is running."""
        if self.batch_active:
            self.notify("A job is already running: cancel it first.", severity="warning")
            return False
        self.batch_active = True
        self.batch_ended.clear()
        return True

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="batch", description="Running batch"
    )
    def run_batch(
        self,
        job: BatchJob | None,
        job_id: str,
        retry_failed: bool,
        stream: PromptStream | None = None,
    ) -> None:
        """Run the job as `tui-batch run` does, at any size: its prompts and results stay
        in its checkpoint, its input is read in as it runs, and memory holds neither."""
        try:
            self._run_batch(job, job_id, retry_failed, stream)
        finally:
            self.batch_ended.set()

    def _run_batch(
        self,
        job: BatchJob | None,
        job_id: str,
        retry_failed: bool,
        stream: PromptStream | None,
    ) -> None:
        processor = self.processor
        with processor.store.lock(job_id) as lock:
            if job is None:
                job = processor.open_job(job_id)
                # A job stopped while its input was read in reads on from where it stopped.
                stream = reopen_stream(job) if job.reading is not None else None
                run = RunState.resumed(job, processor.clock, retry_failed=retry_failed)
                self.call_from_thread(self._show_run, run)
            else:
                run = self.run_state
            with self.backend_factory(job) as backend:
                run.backend = backend
                processor.run_streamed(
                    job,
                    backend,
                    stream=stream,
                    cancel_event=run.cancel,
                    pause_event=run.pause,
                    retry_failed=retry_failed,
                    on_event=run.handle,
                    lock=lock,
                )
        finished = messages.JobFinished(job.job_id, job.status, job.completed, job.failed)
        assert job.checkpoint_file is not None
        finished.empty = result_counts(job.checkpoint_file).empty
        if job.status is not JobStatus.CANCELLED:
            try:  # written as `tui-batch run` writes them
                results = StoredResults(job.checkpoint_file, job.prompts)
                finished.results_file = processor.save_results(job, results)
            except TuiBatchError as exc:
                finished.export_error = str(exc)
        self.post_message(finished)

    def _show_run(self, run: RunState) -> None:
        self.run_state = run
        if self.stop_requested:
            run.cancel.set()  # stop was asked for while the job was loading
        self.action_progress()

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "run_batch" or not event.worker.is_finished:
            return
        self.batch_active = False
        run = self.run_state
        text = None
        if event.state is WorkerState.ERROR:
            error = event.worker.error
            text = str(error) if isinstance(error, TuiBatchError) else describe_error(error)
            self.notify(text, title="Job stopped", severity="error")
        if run is not None:
            run.finish(text)
        if self.exit_after_job is not None:
            self.exit(return_code=self.exit_after_job)

    def on_job_finished(self, message: messages.JobFinished) -> None:
        status = message.status.value
        empty = f" ({message.empty} empty answers)" if message.empty else ""
        text = (
            f"Job {message.job_id} {status}: {message.completed} ok{empty}, "
            f"{message.failed} failed."
        )
        if message.results_file is not None:
            text += f" Results: {message.results_file}"
        elif message.export_error is not None:
            text += f" The results file was not written: {message.export_error}"
        elif message.status is JobStatus.CANCELLED:
            text += " Resume it from Checkpoints (ctrl+b), or: tui-batch resume " + message.job_id
        self.notify(
            text,
            title="Batch finished",
            severity="warning" if message.failed or message.export_error else "information",
            timeout=20,
        )
        self.bell()

    def keep_setup_draft(self) -> None:
        """Job setup, on the way out: what its form holds is remembered for next time."""
        for screen in self.screen_stack:
            if isinstance(screen, SetupScreen):
                screen.keep_draft()

    def stop_and_exit(self, return_code: int = 0) -> None:
        """Stop the running job after its current step (it is saved), then exit."""
        self.keep_setup_draft()
        self.exit_after_job = return_code
        self.stop_requested = True
        if not self.batch_active:
            self.exit(return_code=return_code)
            return
        if self.run_state is not None:
            self.run_state.cancel.set()
            self.run_state.pause.clear()
        self.notify("Stopping the job: finished results are saved…")

    async def action_quit(self) -> None:
        """ctrl+q: while a job runs, ask first; the worker must stop before the process
        can end (it would otherwise run the whole job to the end)."""
        self.keep_setup_draft()
        if not self.batch_active:
            self.exit()
            return
        if self.stop_requested or isinstance(self.screen, QuitScreen):
            return  # already asked, or on the way out

        def answer(choice: str | None) -> None:
            if choice in ("stop", "wait") and not self.batch_active:
                self.exit()  # the job finished while the question was up
            elif choice == "stop":
                self.stop_and_exit(0)
            elif choice == "wait":
                self.exit_after_job = 0
                self.notify("tui-batch quits when the job finishes.")

        job_id = self.run_state.job.job_id if self.run_state else "?"
        self.push_screen(QuitScreen(job_id), answer)

    def resume_job(self, job_id: str) -> None:
        """Resume a checkpoint, asking first whether its failed prompts run again too
        (and, for a template job whose files changed, whether to go on at all)."""
        self._check_resume(job_id)

    @work(thread=True, group="resume-check", exit_on_error=False, description="Checking job")
    def _check_resume(self, job_id: str) -> None:
        """Read the job's summary and compare its template and data files with the
        hashes it keeps: a big data file takes seconds to hash, so not on the UI thread."""
        try:
            summary = self.processor.job_summary(job_id)
            changes = summary.template.changes() if summary.template else []
        except TuiBatchError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.call_from_thread(self._ask_resume, summary, changes)

    def _ask_resume(self, summary: JobSummary, changes: list[str]) -> None:
        job_id = summary.job_id
        if not summary.resumable and not summary.failed:
            self.notify(f"Job {job_id} is finished: nothing to resume.", severity="warning")
            return

        def answer(retry_failed: bool | None) -> None:
            if retry_failed is not None:
                self.start_saved(job_id, retry_failed)

        def ask_retry(go_on: bool | None = True) -> None:
            if not go_on:
                return
            if summary.failed:
                self.push_screen(ResumeScreen(job_id, summary.failed), answer)
            else:
                answer(False)

        # A template job runs the prompts it stored; if its files changed, say so first.
        if changes:
            question = (
                f"Job {job_id}: {'; '.join(changes)}.\n\nGo on with the prompts rendered "
                "when the job was made?"
            )
            self.push_screen(
                ConfirmScreen(question, yes="go on with them", no="don't resume"), ask_retry
            )
        else:
            ask_retry()

    def rerun_failed(self, job_id: str) -> None:
        self.start_saved(job_id, retry_failed=True)

    def export_job(self, job_id: str, shown: tuple[list[int], str] | None = None) -> None:
        """Ask for a format and a path (and, with `shown`, the prompt indices a filtered
        view shows and how it is filtered, whether to write only those), then export in
        the background."""

        def answer(choice: tuple[str, Path, bool] | None) -> None:
            if choice is not None:
                format, path, only_shown = choice
                indices = shown[0] if shown is not None and only_shown else None
                self.export_in_background(job_id, format, path, indices)

        self.push_screen(ExportScreen(job_id, Path.cwd(), shown), answer)

    @work(thread=True, group="export", exit_on_error=False, description="Exporting results")
    def export_in_background(
        self, job_id: str, format: str, path: Path, indices: list[int] | None = None
    ) -> None:
        try:
            job = self.processor.open_job(job_id)  # read as written: flat at any size
            assert job.checkpoint_file is not None
            results = StoredResults(job.checkpoint_file, job.prompts, indices)
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

    def show_results(
        self, job_id: str, reason: str | None = None, cell: ConfusionCell | None = None
    ) -> None:
        """A job's results; with a `reason`, only the failures of that group; with a
        `cell`, only the results of that cell of a confusion matrix."""
        self.push_screen(ResultsScreen(job_id, reason, cell))

    def show_stats(self, job_id: str) -> None:
        from tui_batch.ui.screens.stats import StatsScreen

        self.push_screen(StatsScreen(job_id))

    def _show(self, kind: type, make: Callable[[], object]) -> None:
        """Go to the screen of this kind already on the stack, else push a new one."""
        for index, screen in enumerate(self.screen_stack):
            if isinstance(screen, kind):
                while len(self.screen_stack) > index + 1:
                    self.pop_screen()
                return
        self.push_screen(make())
