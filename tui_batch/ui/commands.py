"""The command palette (ctrl+p): the main actions, namespaced ("job: ...")."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

from tui_batch.core.text import one_line


def _help(text: str) -> str:
    """A help line for the palette, which reads it as markup: a model name a server
    sent is data, so its brackets and control characters are escaped."""
    return escape(one_line(text, 80))


class TuiBatchCommands(Provider):
    def _commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        commands = [
            ("job: new batch", app.action_setup, "Go to job setup"),
            ("job: checkpoints", app.action_checkpoints, "Browse, resume, export, delete jobs"),
            ("job: progress", app.action_progress, "Show the running job"),
            ("jobs: all", app.action_jobs, "Every job of this session: pause, stop, priority"),
            ("help: keys", app.action_help, "Every key of every screen"),
        ]
        for entry in app.processor.job_summaries()[:50]:
            job_id = entry.job_id
            commands.append(
                (
                    f"job: results {job_id}",
                    partial(app.show_results, job_id),
                    _help(" · ".join(filter(None, (entry.name, entry.model_id, entry.state)))),
                )
            )
            commands.append(
                (
                    f"job: stats {job_id}",
                    partial(app.show_stats, job_id),
                    "figures, failures by reason, throughput",
                )
            )
            # Only a job with something to run again can be resumed.
            if entry.resumable or entry.failed:
                left = entry.total_prompts - entry.done
                what = f"{left} not run" if left else f"{entry.failed} failed to run again"
                commands.append(
                    (
                        f"job: resume {job_id}",
                        partial(app.resume_job, job_id),
                        f"{entry.done}/{entry.total_prompts} done, {what}",
                    )
                )
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands()[:5]:
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
