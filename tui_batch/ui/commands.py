"""The command palette (ctrl+p): the main actions, namespaced ("job: ...")."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class TuiBatchCommands(Provider):
    def _commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        commands = [
            ("job: new batch", app.action_setup, "Go to job setup"),
            ("job: checkpoints", app.action_checkpoints, "Browse, resume, export, delete jobs"),
            ("job: progress", app.action_progress, "Show the running job"),
            ("help: keys", app.action_help, "Every key of every screen"),
        ]
        for entry in app.processor.list_checkpoints()[:50]:
            job_id = entry.job_id
            commands.append(
                (
                    f"job: results {job_id}",
                    partial(app.show_results, job_id),
                    f"{entry.model_id} · {entry.status.value}",
                )
            )
            commands.append(
                (
                    f"job: stats {job_id}",
                    partial(app.show_stats, job_id),
                    "figures, failures by reason, throughput",
                )
            )
            commands.append(
                (
                    f"job: resume {job_id}",
                    partial(app.resume_job, job_id),
                    f"{entry.done}/{entry.total_prompts} done",
                )
            )
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands()[:4]:
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
