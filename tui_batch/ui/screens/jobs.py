"""The jobs of this session (ctrl+j): running, waiting for their model, paused and
ended, each with its progress, rate and ETA. `enter` shows a job's progress, `p`
pauses or goes on, `x` stops one, `+`/`-` change its priority."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from tui_batch.core.progress import format_duration
from tui_batch.ui.job_queue import MAX_PRIORITY, QueuedJob
from tui_batch.ui.text import one_line
from tui_batch.ui.widgets.virtual_table import Column, VirtualTable

REFRESH_INTERVAL = 1 / 2
STATE_STYLE = {
    "running": "bold cyan",
    "paused": "cyan",
    "waiting for its model": "yellow",
    "waiting (paused)": "yellow",
    "stopping": "yellow",
    "completed": "green",
    "cancelled": "yellow",
    "failed": "bold red",
    "error": "bold red",
}
COLUMNS = [
    Column("#", 3, "right"),
    Column("Job", 0),
    Column("Model", 20),
    Column("State", 22),
    Column("Pri", 3, "right"),
    Column("Done", 15, "right"),
    Column("Failed", 7, "right"),
    Column("tok/s", 7, "right"),
    Column("ETA", 8, "right"),
]


def job_row(entry: QueuedJob) -> list[Text]:
    """One job's row: its figures as the progress screen shows them."""
    state = entry.state()
    cells = [
        Text(str(entry.number)),
        one_line(entry.label),
        Text(""),
        Text(state, style=STATE_STYLE.get(state, "")),
        Text(str(entry.priority)),
    ]
    run = entry.run
    if run is None:
        return cells + [Text("")] * 4
    job, update = run.job, run.update
    cells[2] = one_line(job.model_id if job.server is None else f"{job.model_id} (servers)")
    total = job.total_prompts
    percent = f" {100 * job.done / total:3.0f}%" if total else ""
    if run.is_active and run.tokens_counted:
        rate = run.live_figures()[1]
    else:
        rate = update.tokens_per_second if update is not None else 0.0
    if run.finished:
        eta = "-"
    elif update is None or state != "running":  # paused or waiting: no time to give
        eta = ""
    else:
        eta = format_duration(update.eta_seconds)
    return cells + [
        Text(f"{job.done:,}/{total:,}{percent}"),
        Text(str(job.failed), style="bold red" if job.failed else ""),
        Text(f"{rate:.1f}" if rate else ""),
        Text(eta),
    ]


class JobsScreen(Screen[None]):
    BINDINGS = [
        Binding("enter", "watch", "Progress"),
        Binding("p", "pause", "Pause/go on"),
        Binding("x", "cancel", "Stop job"),
        Binding("plus,equals_sign", "priority(1)", "Priority +"),
        Binding("minus", "priority(-1)", "Priority -"),
        Binding("escape", "app.pop_screen", "Back"),
        # Already here: the footer has no room for a key to this screen.
        Binding("ctrl+j", "app.jobs", "Jobs", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="jobs-title")
        yield VirtualTable(COLUMNS, id="jobs")
        yield Static(id="jobs-help")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Jobs"
        self.query_one("#jobs-help", Static).update(
            Text(
                f"Jobs started while others run join them. A job's priority (1-{MAX_PRIORITY}) "
                "weighs its share of the model's slots or the servers' requests it shares, "
                "and its place among the jobs waiting for a model.",
                style="dim",
            )
        )
        table = self.query_one("#jobs", VirtualTable)
        table.focus()
        self.refresh_jobs()
        shown = self.app.run_state
        entries = self.app.queue.jobs
        for position, entry in enumerate(entries):
            if entry.run is not None and entry.run is shown:
                table.follow(position)
        self.set_interval(REFRESH_INTERVAL, self.refresh_jobs)

    def refresh_jobs(self) -> None:
        """The timer's tick: every row again (a session has few jobs)."""
        entries = list(self.app.queue.jobs)
        states = [entry.state() for entry in entries]
        counts: dict[str, int] = {}
        for state in states:
            word = state.split()[0]
            counts[word] = counts.get(word, 0) + 1
        title = (
            ", ".join(f"{count} {word}" for word, count in counts.items())
            if entries
            else "No job has run in this session: start one from job setup, or resume "
            "one from Checkpoints (ctrl+b)."
        )
        self.query_one("#jobs-title", Static).update(Text(title, style="bold"))
        table = self.query_one("#jobs", VirtualTable)
        table.set_rows(len(entries), lambda position: job_row(entries[position]))
        table.refresh()

    def _selected(self) -> QueuedJob | None:
        table = self.query_one("#jobs", VirtualTable)
        entries = self.app.queue.jobs
        position = table.cursor_key
        if position is None or not 0 <= position < len(entries):
            return None
        return entries[position]

    def on_virtual_table_selected(self) -> None:
        self.action_watch()

    def action_watch(self) -> None:
        entry = self._selected()
        if entry is None or entry.run is None:
            self.notify("No job here yet.", severity="warning")
            return
        self.app.show_progress_of(entry.run)

    def action_pause(self) -> None:
        entry = self._selected()
        if entry is not None and entry.run is not None:
            self.app.toggle_pause(entry.run)
            self.refresh_jobs()

    def action_cancel(self) -> None:
        entry = self._selected()
        if entry is not None and entry.run is not None:
            self.app.ask_stop(entry.run)

    def action_priority(self, step: int) -> None:
        entry = self._selected()
        if entry is None or entry.ended:
            self.notify("Only a job not yet over has a priority to change.", severity="warning")
            return
        priority = self.app.queue.set_priority(entry, entry.priority + step)
        self.app.admit_waiting()
        self.notify(f"Job {entry.label}: priority {priority}.")
        self.refresh_jobs()
