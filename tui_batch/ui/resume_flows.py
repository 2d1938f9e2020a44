"""Resuming from the dashboard: a saved job (asking whether its failed prompts run
again too, and, for a template job whose files changed, whether to go on at all) and a
whole group (asked once for all its jobs). Part of the app (`TuiBatchApp`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import work

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.jobs import BatchJob
from tui_batch.core.rows import JobSummary
from tui_batch.ui.screens.modals import ConfirmScreen, ResumeScreen

if TYPE_CHECKING:
    from tui_batch.core.processor import BatchProcessor
    from tui_batch.ui.job_queue import JobQueue


class ResumeFlows:
    """The app's resume questions; the app starts what is answered (`start_saved`)."""

    processor: BatchProcessor
    queue: JobQueue

    if TYPE_CHECKING:  # the app's own

        def notify(self, message: str, **options: Any) -> None: ...
        def push_screen(self, screen: Any, callback: Any = None) -> Any: ...
        def call_from_thread(self, callback: Any, *args: Any, **kwargs: Any) -> Any: ...
        def start_saved(self, job_id: str, retry_failed: bool, show: bool = True) -> None: ...

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

    @work(thread=True, group="resume-check", exit_on_error=False, description="Checking group")
    def resume_group(self, group_id: str) -> None:
        """Resume every job of the group with work left, at once (as `tui-batch resume
        GROUP`), asking once whether failed prompts run again too; a template job whose
        files changed is left out, and said."""
        try:
            jobs = self.processor.group_jobs(group_id)
            changed = {
                job.job_id: job.template.changes()
                for job in jobs
                if job.template and job.reading is None and job.work_left(True)
            }
        except TuiBatchError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.call_from_thread(self._ask_resume_group, group_id, jobs, changed)

    def _ask_resume_group(
        self, group_id: str, jobs: list[BatchJob], changed: dict[str, list[str]]
    ) -> None:
        for job_id, changes in changed.items():
            if changes:
                self.notify(
                    f"Job {job_id}: {'; '.join(changes)}: not resumed (resume it alone "
                    "from Checkpoints to go on with its stored prompts).",
                    severity="warning",
                    timeout=15,
                )
        jobs = [
            job
            for job in jobs
            if not changed.get(job.job_id) and self.queue.find(job.job_id) is None
        ]
        failed = sum(job.failed for job in jobs if job.work_left(True))

        def answer(retry_failed: bool | None) -> None:
            if retry_failed is None:
                return
            left = [job for job in jobs if job.work_left(retry_failed)]
            if not left:
                self.notify(f"Group {group_id}: nothing left to run.", severity="warning")
            for position, job in enumerate(left):
                self.start_saved(job.job_id, retry_failed, show=position == 0)

        if not any(job.work_left(True) for job in jobs):
            self.notify(f"Group {group_id}: every job is finished.", severity="warning")
        elif failed:
            question = (
                f"Resume group {group_id}: its jobs run at once. Run their {failed} failed "
                "prompt(s) again too?"
            )
            self.push_screen(ResumeScreen(group_id, failed, question), answer)
        else:
            answer(False)

    def rerun_failed(self, job_id: str) -> None:
        self.start_saved(job_id, retry_failed=True)
