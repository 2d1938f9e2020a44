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

from tui_batch.backends.pool import BackendPool
from tui_batch.core.backend import Backend, describe_error
from tui_batch.core.errors import TuiBatchError
from tui_batch.core.jobs import BatchJob, JobStatus
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompt_stream import PromptStream, reopen_stream
from tui_batch.core.scoring.figures import ConfusionCell
from tui_batch.core.stored import StoredResults, result_counts
from tui_batch.core.text import escape_controls
from tui_batch.ui import messages
from tui_batch.ui.commands import TuiBatchCommands
from tui_batch.ui.job_queue import JobQueue, OwnBackends, QueuedJob, never_started, stop
from tui_batch.ui.resume_flows import ResumeFlows
from tui_batch.ui.run_state import RunState
from tui_batch.ui.screens.checkpoints import CheckpointsScreen
from tui_batch.ui.screens.help import HelpScreen
from tui_batch.ui.screens.modals import ConfirmScreen, ExportScreen, QuitScreen
from tui_batch.ui.screens.progress import ProgressScreen
from tui_batch.ui.screens.results import ResultsScreen
from tui_batch.ui.screens.setup import SetupScreen
from tui_batch.ui.stop_signals import StopSignals

BackendFactory = Callable[[BatchJob], Backend]


class TuiBatchApp(ResumeFlows, App[None]):
    """Set up a batch, watch it run, browse checkpoints and inspect results."""

    TITLE = "tui-batch"
    CSS_PATH = "tui_batch.tcss"
    COMMANDS = App.COMMANDS | {TuiBatchCommands}
    BINDINGS = [
        Binding("f1,question_mark", "help", "Help"),
        Binding("ctrl+b", "checkpoints", "Checkpoints"),
        Binding("ctrl+g", "progress", "Progress"),
        Binding("ctrl+j", "jobs", "Jobs"),
    ]

    def __init__(
        self,
        prompts_file: Path | None = None,
        *,
        processor: BatchProcessor | None = None,
        backend_factory: BackendFactory | None = None,
        max_models: int = 1,
    ) -> None:
        """`backend_factory`: each job a backend of its own from it (tests, benchmarks);
        by default jobs share each loaded model and each fleet (`BackendPool`), with
        `max_models` models loaded at most."""
        super().__init__()
        self.prompts_file = prompts_file
        self.processor = processor or BatchProcessor()
        backends = (
            OwnBackends(backend_factory)
            if backend_factory is not None
            else BackendPool(max_models, self._loading)
        )
        self.queue = JobQueue(backends)
        # The job the progress screen shows (one of the queue's, the latest started).
        self.run_state: RunState | None = None
        self._launched: dict[Worker, QueuedJob] = {}
        # Set when the app is to exit once every job has stopped: the exit status.
        self.exit_after_job: int | None = None
        self.stop_requested = False
        # Set while no job's worker runs: each has stopped, and saved.
        self.batch_ended = threading.Event()
        self.batch_ended.set()
        self._job_workers = 0
        self._job_workers_lock = threading.Lock()
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
        self.queue.stop_all()  # none is left running by an exit that did not ask (a test's)
        if self.batch_ended.is_set():  # else a job still runs on them: the process ends
            self.queue.close()

    # Running jobs ------------------------------------------------------------------

    @property
    def batch_active(self) -> bool:
        """Whether a job's worker runs (opening, waiting, running or stopping)."""
        return bool(self.queue.active())

    def start_job(
        self, job: BatchJob, stream: PromptStream | None = None, show: bool = True
    ) -> None:
        """Run a new job beside any running (no question asked) and (with `show`) show
        its progress; a job made from the first chunk of its input
        (`create_streamed_job`) reads the rest from `stream`."""
        run = RunState(job, self.processor.clock)
        entry = self._add(job.job_id, run=run, stream=stream)
        if entry is not None:
            if show or self.run_state is None:
                self.run_state = run
                self.action_progress()
            self.admit_waiting(said=True)

    def start_saved(self, job_id: str, retry_failed: bool, show: bool = True) -> None:
        """Resume a saved job beside any running: it is read once, in its worker, which
        then shows its progress (with `show`)."""
        entry = self._add(job_id, retry_failed=retry_failed)
        if entry is not None:
            entry.show = show
            self.notify(f"Loading job {job_id}…")

    def _add(self, job_id: str, **how: object) -> QueuedJob | None:
        """Queue the job and start its worker; None (said why) if it cannot be."""
        try:
            entry = self.queue.add(job_id, **how)  # type: ignore[arg-type]
        except TuiBatchError as exc:
            self.notify(str(exc), severity="warning")
            return None
        with self._job_workers_lock:
            self._job_workers += 1
            self.batch_ended.clear()
        worker = self.run_worker(
            partial(self._run_queued, entry),
            name="run_batch",
            group="batch",
            description=f"Running job {job_id}",
            exit_on_error=False,
            thread=True,
        )
        self._launched[worker] = entry
        return entry

    def _run_queued(self, entry: QueuedJob) -> None:
        """A job's worker: run it as `tui-batch run` does, at any size: its prompts and
        results stay in its checkpoint, its input is read in as it runs, and memory
        holds neither."""
        try:
            self._run_batch(entry)
        finally:
            self.queue.ended(entry)
            with self._job_workers_lock:
                self._job_workers -= 1
                if not self._job_workers:
                    self.batch_ended.set()

    def _run_batch(self, entry: QueuedJob) -> None:
        processor = self.processor
        with processor.store.lock(entry.job_id) as lock:
            if entry.run is None:
                job = processor.open_job(entry.job_id)
                # A job stopped while its input was read in reads on from where it stopped.
                entry.stream = reopen_stream(job) if job.reading is not None else None
                run = RunState.resumed(job, processor.clock, retry_failed=entry.retry_failed)
                entry.run = run
                self.call_from_thread(self._opened, entry)
            run = entry.run
            job = run.job
            backend = self.queue.wait(entry)
            if backend is None:  # stopped while it waited for its model
                never_started(run)
                self.post_message(messages.JobFinished(job.job_id, job.status, 0, 0))
                return
            run.backend = backend
            processor.run_streamed(
                job,
                backend,
                stream=entry.stream,
                cancel_event=run.cancel,
                pause_event=run.pause,
                retry_failed=entry.retry_failed,
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

    def _opened(self, entry: QueuedJob) -> None:
        """A saved job is open: show it (unless resumed with others), and queue it."""
        run = entry.run
        assert run is not None
        if self.stop_requested or entry.stopped:
            stop(entry)  # asked while the job was loading
        if entry.show or self.run_state is None:
            self.run_state = run
            self.action_progress()
        self.admit_waiting(said=True)

    def admit_waiting(self, said: bool = False) -> None:
        """Start the waiting jobs whose model is free; with `said`, tell of those that
        must wait."""
        self.queue.admit()
        if not said:
            return
        for entry in self.queue.active():
            if entry.waiting and not entry.told:
                entry.told = True
                self.notify(
                    f"Job {entry.label} waits for its model: another is loaded and in use "
                    "(ctrl+j lists the jobs).",
                    timeout=8,
                )

    def _loading(self, model: str) -> None:
        self.notify(f"Loading {model} (once for the jobs on it)…")

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "batch" or not event.worker.is_finished:
            return
        entry = self._launched.pop(event.worker, None)
        if entry is None:
            return
        text = None
        if event.state is WorkerState.ERROR:
            error = event.worker.error
            text = str(error) if isinstance(error, TuiBatchError) else describe_error(error)
            self.notify(text, title=f"Job {entry.label} stopped", severity="error")
        if entry.run is not None:
            entry.run.finish(text)
        self.queue.forget(entry)
        self.admit_waiting(said=True)  # its model may be free for another
        if self.exit_after_job is not None and not self.batch_active:
            self.exit(return_code=self.exit_after_job)

    def show_run(self, step: int) -> None:
        """Show the next (`step` 1) or previous (-1) running job's progress."""
        runs = self.queue.runs()
        current = self.run_state
        others = [run for run in runs if run is not current]
        if not others:
            self.notify("No other job is running (ctrl+j lists the jobs).", severity="warning")
            return
        if current in runs:
            self.run_state = runs[(runs.index(current) + step) % len(runs)]
        else:
            self.run_state = runs[0] if step > 0 else runs[-1]
        self.action_progress()

    def toggle_pause(self, run: RunState) -> None:
        """Pause a job after its current step (a waiting one before it starts), or let
        it go on."""
        entry = self.queue.entry_of(run)
        name = entry.label if entry is not None else run.job.job_id
        if run.finished:
            self.notify(f"Job {name} is not running.", severity="warning")
        elif run.pause.is_set():
            run.pause.clear()
            self.admit_waiting()  # a paused job waiting for its model may start now
            self.notify(f"Job {name} goes on.")
        else:
            run.pause.set()
            self.notify(f"Pausing job {name} after the current step.")

    def ask_stop(self, run: RunState) -> None:
        """Stop a job, once the person says so: its finished results are kept."""
        entry = self.queue.entry_of(run)
        name = entry.label if entry is not None else run.job.job_id
        if run.finished:
            self.notify(f"Job {name} is not running.", severity="warning")
            return

        def answer(yes: bool | None) -> None:
            if yes and not run.finished:
                if entry is not None:
                    stop(entry)
                else:
                    run.cancel.set()
                    run.pause.clear()
                self.notify(f"Stopping job {name}: finished results are saved; resume it any time.")

        question = (
            f"Stop job {name}? Finished results are kept, and it can be resumed from Checkpoints."
        )
        server = run.job.server
        if server is not None and server.batch_api:
            question = (
                f"Stop job {name}? Its batches in flight are cancelled at the provider; what "
                "they finished is kept, and resume reads it and sends only the rest."
            )
        self.push_screen(ConfirmScreen(question, yes="stop the job", no="keep it running"), answer)

    def show_progress_of(self, run: RunState) -> None:
        """Show `run`'s progress (the Jobs view's enter)."""
        self.run_state = run
        self.action_progress()

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
        """Stop every job after its current step (each is saved), then exit."""
        self.keep_setup_draft()
        self.exit_after_job = return_code
        self.stop_requested = True
        if not self.batch_active:
            self.exit(return_code=return_code)
            return
        count = len(self.queue.active())
        self.queue.stop_all()
        jobs = "the job" if count == 1 else f"{count} jobs"
        self.notify(f"Stopping {jobs}: finished results are saved…")

    async def action_quit(self) -> None:
        """ctrl+q: while jobs run, ask once for all; their workers must stop before the
        process can end (they would otherwise run every job to its end)."""
        self.keep_setup_draft()
        if not self.batch_active:
            self.exit()
            return
        if self.stop_requested or isinstance(self.screen, QuitScreen):
            return  # already asked, or on the way out

        def answer(choice: str | None) -> None:
            if choice in ("stop", "wait") and not self.batch_active:
                self.exit()  # the jobs finished while the question was up
            elif choice == "stop":
                self.stop_and_exit(0)
            elif choice == "wait":
                self.exit_after_job = 0
                count = len(self.queue.active())
                self.notify(
                    "tui-batch quits when the job finishes."
                    if count == 1
                    else f"tui-batch quits when the {count} jobs finish."
                )

        self.push_screen(QuitScreen([e.label for e in self.queue.active()]), answer)

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

    def action_jobs(self) -> None:
        from tui_batch.ui.screens.jobs import JobsScreen

        self._show(JobsScreen, JobsScreen)

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
