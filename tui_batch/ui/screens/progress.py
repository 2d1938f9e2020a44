"""Live progress of the running job: figures, throughput, every prompt, live text."""

from __future__ import annotations

import contextlib
import sqlite3

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, ProgressBar, Sparkline, Static

from tui_batch.core.backend import BackendStatus
from tui_batch.core.errors import TuiBatchError
from tui_batch.core.jobs import BatchResult, JobStatus
from tui_batch.core.progress import format_duration
from tui_batch.core.results import ResultsView
from tui_batch.core.servers import ServerSettings
from tui_batch.ui.prompt_states import FINISHED
from tui_batch.ui.run_state import HISTORY_SECONDS, SMOOTHING_SECONDS, RunState
from tui_batch.ui.screens.modals import ResultScreen
from tui_batch.ui.text import literal, one_line, prompt_cell, token_cells
from tui_batch.ui.widgets.virtual_table import Column, VirtualTable

REFRESH_INTERVAL = 1 / 10
STATUS_STYLE = {
    "ok": "green",
    "failed": "bold red",
    "invalid": "bold yellow",
    "running": "bold cyan",
    "retrying": "yellow",
    "waiting": "yellow",
    "pending": "dim",
}
COLUMNS = [
    Column("#", 6, "right"),
    Column("Status", 9),
    Column("Prompt", 0),
    Column("In", 6, "right"),
    Column("Out", 6, "right"),
    Column("Time", 7, "right"),
    Column("Error", 28),
]


def status_line(run: RunState) -> Text:
    job, update = run.job, run.update
    done = job.done
    total = job.total_prompts
    percent = 100.0 * done / total if total else 100.0
    text = Text()
    text.append(f"{percent:5.1f}%", style="bold")
    text.append(f"  {done}/{total} done  ")
    invalid = update.invalid if update is not None else 0
    cut = update.thought_cut if update is not None else 0
    failed = job.failed - invalid - cut
    text.append(f"{failed} failed", style="bold red" if failed else "")
    if invalid:
        text.append(f"  {invalid} invalid", style="bold yellow")
    if cut:
        text.append(f"  {cut} no answer after the thought", style="bold yellow")
    if run.is_active and run.tokens_counted:
        elapsed, rate = run.live_figures()  # many prompts at once finish in bursts
    elif update is not None:
        elapsed, rate = update.elapsed, update.tokens_per_second
    else:
        return text
    text.append(f"  elapsed {format_duration(elapsed)}")
    if update is not None:
        eta = 0.0 if run.finished else update.eta_seconds
        text.append(f"  ETA {format_duration(eta)}")
    text.append(f"  {rate:.1f} tok/s")
    if update is not None:
        text.append(f"  {update.throughput:.1f} prompts/s")
    if update is not None and update.budget:
        text.append(f"  {update.budget}", style="cyan")
    return text


def queue_label(run: RunState, runs: list[RunState]) -> Text:
    """Where this job stands among the jobs running, when others run beside it."""
    others = [other for other in runs if other is not run]
    if not others:
        return Text()
    if run in runs:
        place = f"job {runs.index(run) + 1} of {len(runs)} running"
    else:
        place = f"{len(others)} other job{'s' if len(others) > 1 else ''} running"
    return Text.assemble(("  ", ""), (place, "cyan"), ("  n next, ctrl+j all", "dim"))


def reading_label(run: RunState) -> Text:
    """While the job's input is still read in as it runs (its total grows with it)."""
    if run.records_read is None or run.finished:
        return Text()
    return Text.assemble(
        ("  input ", "dim"),
        (f"reading: {run.records_read:,} records so far, the rest as it runs", "cyan"),
    )


def answers_label(run: RunState) -> Text:
    """A job with a schema: what its answers must be, and how that is kept; a job on
    the answer cache: what it served (or why it could not)."""
    text = Text()
    schema = run.job.settings.schema
    if schema is not None:
        text.append("\nanswers ", style="dim")
        text.append_text(one_line(schema.describe()[:80]))
        if run.schema_how:
            text.append_text(one_line(f"  {run.schema_how}", style="dim"))
    if run.cache_note:
        text.append("\n")
        text.append_text(
            one_line(run.cache_note[:160], style="yellow" if run.cache_problem else "cyan")
        )
    return text


def history_label(history: list[float], unit: str) -> Text:
    """The chart's axis: what it shows, over what time, and its scale."""
    return Text.assemble(
        (f"{unit}, {SMOOTHING_SECONDS} s average, last {HISTORY_SECONDS // 60} min", "dim"),
        ("  now ", "dim"),
        (f"{history[-1]:.1f}" if history else "0", "bold"),
        ("  peak ", "dim"),
        (f"{max(history):.1f}" if history else "0", "bold"),
    )


def _servers_label(server: ServerSettings | None) -> str:
    if server is None:
        return ""
    count = len(server.endpoints)
    return f"  on {count} servers" if count > 1 else f"  on {server.endpoints[0].url}"


ENDPOINT_STYLE = {"ok": "green", "cooling": "yellow", "out": "bold red"}


def servers_text(status: BackendStatus, requests: dict[str, list[int]] | None = None) -> Text:
    """Requests in flight, the limits in force, each server's state, the last change;
    a line each, cut to the width. Requests sent and failed at each server are counted
    from the finished prompts' attempt logs (`requests`: url -> [sent, errors]), as
    `tui-batch stats` counts them."""
    if status.batch_api:
        return batches_text(status)
    requests = requests or {}
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("Requests ", style="dim")
    text.append(f"{status.in_flight}/{status.concurrency}", style="bold")
    text.append(" in flight", style="dim")
    text.append(f"  {status.waiting} waiting", style="dim")
    for name, limit in (("rpm", status.rpm), ("tpm", status.tpm)):
        if limit:
            text.append(f"  {name} ≤ {limit:,}", style="dim")
    if status.note:
        text.append(f"  {status.note}", style="bold yellow")
    for endpoint in status.endpoints:
        text.append("\n")
        text.append(f"{endpoint.state:>7} ", style=ENDPOINT_STYLE.get(endpoint.state, ""))
        text.append_text(one_line(endpoint.url))
        if endpoint.state == "cooling" and endpoint.until is not None:
            text.append(f" for {endpoint.until:.0f}s", style="yellow")
        elif endpoint.state == "out" and endpoint.until is not None:
            text.append(f" (probe in {endpoint.until:.0f}s)", style="red")
        text.append(f"  {endpoint.in_flight}/{endpoint.limit}", style="bold")
        limit = f" (cap {endpoint.cap})" if endpoint.limit < endpoint.cap else ""
        sent, errors = requests.get(endpoint.url, (0, 0))
        text.append(f" in flight{limit}  {sent} sent  {errors} errors", style="dim")
        if endpoint.last_error and endpoint.state != "ok":
            text.append_text(one_line(f"  {endpoint.last_error}", style="red"))
    if status.changes and not status.note:
        text.append("\nlast change: ", style="dim")
        text.append_text(one_line(status.changes[-1], style="dim"))
    return text


def batches_text(status: BackendStatus) -> Text:
    """A Batch API job: its prompts in batches and gathered for the next, a line for
    each batch in flight (status, the provider's counts, time since created and left),
    and the last thing said of them."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("Batch API ", style="bold")
    text.append(f"{status.in_flight:,} prompts in batches", style="dim")
    if status.waiting:
        text.append(f"  {status.waiting:,} gathered for the next", style="dim")
    for line in status.batches:
        text.append("\n")
        text.append_text(one_line(line))
    if status.changes:
        text.append("\nlast change: ", style="dim")
        text.append_text(one_line(status.changes[-1], style="dim"))
    return text


class ProgressScreen(Screen[None]):
    """Watches `app.run_state`; leaving this screen leaves the job running."""

    BINDINGS = [
        Binding("p", "pause", "Pause"),
        Binding("x", "cancel", "Cancel job"),
        Binding("f", "failed_only", "Failed only"),
        Binding("l", "follow", "Follow running", show=False),
        Binding("r", "results", "Results"),
        Binding("t", "stats", "Stats"),
        Binding("n", "next_job(1)", "Next job"),
        Binding("N", "next_job(-1)", "Previous job", show=False),
        Binding("escape", "back", "Back"),
        # Already here: the footer has no room for a key to this screen.
        Binding("ctrl+g", "app.progress", "Progress", show=False),
    ]

    def __init__(self, run: RunState | None = None) -> None:
        super().__init__()
        self.failed_only = False
        self.following = True
        self._seen_version = -1
        self._run = run
        self._bound_run: RunState | None = None
        self._shown: dict[str, Text] = {}
        self._servers: BackendStatus | None = None
        self._stored: ResultsView | None = None  # older results, read from the checkpoint
        self._stored_for: str | None = None

    @property
    def run(self) -> RunState:
        return self.app.run_state or self._run

    def _result(self, index: int) -> BatchResult | None:
        """Prompt `index`'s result: a recent one as the run keeps it, an older one read
        back from the job's checkpoint (the run keeps a few thousand, at any size)."""
        run = self.run
        found = run.results.get(index)
        if found is not None or run.status[index] not in FINISHED:
            return found
        path = run.job.checkpoint_file
        if path is None:
            return None
        if self._stored_for != path:
            self._close_stored()
            with contextlib.suppress(TuiBatchError):
                self._stored, self._stored_for = ResultsView(path), path
        if self._stored is None:
            return None
        try:
            fetched = self._stored.fetch([index])
        except (TuiBatchError, sqlite3.Error):
            return None
        return fetched[0] if fetched else None

    def _close_stored(self) -> None:
        if self._stored is not None:
            self._stored.close()
        self._stored = self._stored_for = None

    def on_unmount(self) -> None:
        self._close_stored()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="job-line")
        with Horizontal(id="figures"):
            yield ProgressBar(total=1, show_eta=False, id="bar")
            yield Static(id="stats")
        yield Static(id="server-panel")
        yield Static(id="history-label")
        yield Sparkline([], id="history")
        yield VirtualTable(COLUMNS, id="prompts")
        yield Static(id="live-title")
        with VerticalScroll(id="live"):
            yield Static(id="live-text")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Progress"
        self.query_one("#prompts", VirtualTable).focus()
        self._bind_table()
        self.refresh_from_run()
        self.set_interval(REFRESH_INTERVAL, self.refresh_from_run)

    def _bind_table(self) -> None:
        run = self._bound_run = self.run
        template = run.job.template
        self._id_field = template.id_field if template is not None else None
        count, key = run.rows(self.failed_only)
        table = self.query_one("#prompts", VirtualTable)
        table.set_rows(count, lambda position: self._row(key(position)), key)

    def _row(self, index: int) -> list[Text]:
        run = self.run
        status = run.status[index]
        sending = self._servers.sending if self._servers is not None else None
        if status == "running" and sending is not None and index not in sending:
            status = "waiting"  # given to the backend, waiting for a server's slot
        result = self._result(index)
        cells = [
            Text(str(index)),
            Text(status, style=STATUS_STYLE.get(status, "")),
            prompt_cell(
                run.job.prompts[index], index, self._id_field, run.job.template is not None
            ),
        ]
        if result is None:
            return cells + [Text(""), Text(""), Text(""), Text("")]
        tokens_in, tokens_out = token_cells(result)
        return cells + [
            tokens_in,
            tokens_out,
            Text(f"{result.duration:.2f}s"),
            one_line(result.error_message, style="yellow" if result.invalid else "red"),
        ]

    def refresh_from_run(self) -> None:
        """The timer's tick: repaint what changed since the last one, and only that."""
        run = self.run
        if run is not self._bound_run:
            self._bind_table()
        elif run.version == self._seen_version and run.finished:
            return
        changed = run.version != self._seen_version
        self._seen_version = run.version
        job = run.job
        entry = self.app.queue.entry_of(run)
        state = run.error or (entry.state() if entry is not None else run.job_status.value)
        self._set(
            "#job-line",
            Text.assemble(
                ("Job ", "dim"),
                (job.job_id, "bold"),
                ("  model ", "dim"),
                one_line(job.model_id),
                one_line(_servers_label(job.server), style="dim"),
                ("  status ", "dim"),
                (state, "bold red" if run.error else "bold"),
                queue_label(run, self.app.queue.runs()),
                reading_label(run),
                answers_label(run),
            ),
        )
        self.query_one("#bar", ProgressBar).update(
            total=max(1, job.total_prompts), progress=job.done
        )
        self._set("#stats", status_line(run))
        servers = self._servers = run.backend_status()
        panel = self.query_one("#server-panel", Static)
        panel.display = servers is not None
        if servers is not None:
            with run.lock:
                tallies = {url: list(tally) for url, tally in run.requests.items()}
            self._set("#server-panel", servers_text(servers, tallies), layout=True)
        history, unit = run.history()
        sparkline = self.query_one("#history", Sparkline)
        if history != sparkline.data:
            sparkline.data = history
        self._set("#history-label", history_label(history, unit))
        table = self.query_one("#prompts", VirtualTable)
        if self.failed_only and table.count != len(run.failed):
            self._bind_table()
        if changed:
            if self.following and not self.failed_only and run.running:
                table.follow(min(run.running))
            table.refresh()
        self._show_output()

    def _set(self, selector: str, text: Text, layout: bool = False) -> None:
        """Update a Static only when its text changed (each update costs a repaint)."""
        if self._shown.get(selector) != text:
            self._shown[selector] = text
            self.query_one(selector, Static).update(text, layout=layout)

    def _show_output(self) -> None:
        """The text being generated while following the run, else the selected result."""
        run = self.run
        index, thought, text = run.live()
        if run.finished or not self.following or index is None:
            index = self.query_one("#prompts", VirtualTable).cursor_key
            result = self._result(index) if index is not None else None
            title = f"Prompt {index}" if index is not None else ""
            text = "" if result is None else result.response_text or result.error_message or ""
            thought = "" if result is None else result.reasoning or ""
        else:
            title = f"Generating: prompt {index}"
            title += "  (thinking)" if thought and not text else ""
        shown = literal(text)
        if thought:  # a thinking model's thought, dimmed, then the answer
            shown = Text.assemble(literal(thought.strip(), style="dim italic"), "\n\n", shown)
        self._set("#live-title", Text(title, style="bold"))
        self._set("#live-text", shown, layout=True)

    def on_virtual_table_highlighted(self) -> None:
        self._show_output()

    def on_virtual_table_moved(self) -> None:
        self.following = False

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        self._open(event.key)

    def _open(self, index: int) -> None:
        result = self._result(index)
        if result is None:
            self.notify(f"Prompt {index} has no result yet.", severity="warning")
        else:
            job = self.run.job
            self.app.push_screen(ResultScreen(result, job.scoring, job.settings.schema))

    def action_pause(self) -> None:
        self.app.toggle_pause(self.run)

    def action_cancel(self) -> None:
        self.app.ask_stop(self.run)

    def action_next_job(self, step: int) -> None:
        self.app.show_run(step)

    def action_failed_only(self) -> None:
        self.failed_only = not self.failed_only
        self._bind_table()
        self.notify("Showing failed prompts only." if self.failed_only else "Showing all prompts.")

    def action_follow(self) -> None:
        self.following = True
        if self.run.running:
            self.query_one("#prompts", VirtualTable).follow(min(self.run.running))

    def action_results(self) -> None:
        if not self.run.finished and self.run.job_status is not JobStatus.PAUSED:
            self.notify("Results open when the job is done (or paused).", severity="warning")
            return
        self.app.show_results(self.run.job.job_id)

    def action_stats(self) -> None:
        self.app.show_stats(self.run.job.job_id)

    def action_back(self) -> None:
        self.app.pop_screen()
