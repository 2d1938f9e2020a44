"""Every checkpoint in the data dir: resume, view, export, delete; unreadable ones flagged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from tui_batch.core.cache.answers import file_size
from tui_batch.core.cache.upkeep import size_text
from tui_batch.core.errors import TuiBatchError
from tui_batch.core.jobs import JobStatus
from tui_batch.core.paths import cache_path
from tui_batch.core.rows import JobSummary
from tui_batch.ui.screens.modals import ConfirmScreen
from tui_batch.ui.text import one_line

SORTS: list[tuple[str, Callable[[JobSummary], Any], bool]] = [
    ("updated", lambda e: e.updated_at or "", True),
    ("job id", lambda e: e.job_id, False),
    ("model", lambda e: e.model_id, False),
    ("status", lambda e: e.state, False),
    ("done", lambda e: e.done, True),
    ("failed", lambda e: e.failed, True),
    ("size", lambda e: e.size_bytes, True),
]
STATUS_STYLE = {
    "completed": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "running": "bold cyan",
    # Its record says running, but its process is gone (killed): resume it.
    "interrupted": "bold yellow",
    "paused": "cyan",
    "pending": "dim",
}


def format_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


class CheckpointsScreen(Screen[None]):
    BINDINGS = [
        Binding("r", "resume", "Resume"),
        Binding("v", "view", "Results"),
        Binding("t", "stats", "Stats"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("g", "group", "Group"),
        Binding("e", "export", "Export"),
        Binding("d", "delete", "Delete"),
        Binding("s", "sort", "Sort", show=False),
        Binding("slash", "filter", "Filter", show=False),  # the filter box says it
        Binding("escape", "back", "Back"),
        # Already here: the footer has no room for a key to this screen.
        Binding("ctrl+b", "app.checkpoints", "Checkpoints", show=False),
        # No room in the footer either; the progress screen says it while jobs run.
        Binding("ctrl+j", "app.jobs", "Jobs", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[JobSummary] = []
        self.sort_index = 0
        self.marked: list[str] = []  # job ids to compare, in the order marked

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="/ filter by job id, model or status", id="filter", compact=True)
        yield DataTable(cursor_type="row", zebra_stripes=True, id="checkpoints")
        yield Static(id="checkpoint-info")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Checkpoints"
        table = self.query_one("#checkpoints", DataTable)
        table.add_columns(
            "Job id", "Name · model", "Done", "Failed", "Status", "Last update", "Size"
        )
        self.reload()
        table.focus()

    def on_screen_resume(self) -> None:
        self.reload()

    def reload(self) -> None:
        scan = self.app.processor.scan_checkpoints()
        self.entries = scan.readable + scan.unreadable
        self._fill()

    def _fill(self) -> None:
        table = self.query_one("#checkpoints", DataTable)
        selected = self.selected()
        table.clear()
        needle = self.query_one("#filter", Input).value.strip().lower()
        name, key, reverse = SORTS[self.sort_index]
        readable = sorted((e for e in self.entries if not e.unreadable), key=key, reverse=reverse)
        flagged = [e for e in self.entries if e.unreadable]
        for entry in readable + flagged:
            haystack = " ".join(
                (
                    entry.job_id,
                    entry.name or "",
                    entry.model_id,
                    entry.state,
                    entry.unreadable or "",
                )
            ).lower()
            if needle and needle not in haystack:
                continue
            table.add_row(*self._cells(entry), key=entry.checkpoint_file)
        if selected is not None and selected.checkpoint_file in table.rows:
            table.move_cursor(row=table.get_row_index(selected.checkpoint_file))
        shown = table.row_count
        flagged_count = len(flagged)
        info = Text(f"{shown} shown of {len(self.entries)} · sorted by {name}")
        if flagged_count:
            info.append(f" · {flagged_count} unreadable (flagged)", style="bold red")
        cache = cache_path()
        if cache.exists():
            info.append(f" · answer cache {size_text(file_size(cache))}", style="cyan")
        self.query_one("#checkpoint-info", Static).update(info)
        self._show_reason()

    def _cells(self, entry: JobSummary) -> list[Text]:
        if entry.unreadable:
            return [
                one_line(entry.job_id, style="red"),
                Text("unreadable", style="bold red"),
                Text("-"),
                Text("-"),
                Text("unreadable", style="bold red"),
                Text("-"),
                Text("-"),
            ]
        status = entry.state
        mark = f"{self.marked.index(entry.job_id) + 1}▸" if entry.job_id in self.marked else "  "
        shown = Text(status, style=STATUS_STYLE.get(status, ""))
        if entry.resumable and status != JobStatus.RUNNING.value:
            shown.append(" · resumable", style="bold")
        return [
            Text(f"{mark}{entry.job_id}", style="bold"),
            _title(entry),
            Text(f"{entry.done}/{entry.total_prompts}", justify="right"),
            Text(str(entry.failed), style="red" if entry.failed else "", justify="right"),
            shown,
            Text((entry.updated_at or "").replace("T", " ").replace("+00:00", " UTC")),
            Text(format_size(entry.size_bytes), justify="right"),
        ]

    def selected(self) -> JobSummary | None:
        table = self.query_one("#checkpoints", DataTable)
        if table.row_count == 0:
            return None
        row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return next((e for e in self.entries if e.checkpoint_file == row_key.value), None)

    def _readable(self) -> JobSummary | None:
        entry = self.selected()
        if entry is None:
            self.notify("No checkpoint selected.", severity="warning")
        elif entry.unreadable:
            self.notify(f"Unreadable: {entry.unreadable}", severity="error")
            return None
        return entry

    @on(DataTable.RowHighlighted)
    def _show_reason(self) -> None:
        entry = self.selected()
        info = self.query_one("#checkpoint-info", Static)
        if entry is not None and entry.unreadable:
            info.update(one_line(f"{entry.checkpoint_file}: {entry.unreadable}", style="red"))

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_resume()

    @on(Input.Changed, "#filter")
    def _filter_changed(self) -> None:
        self._fill()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one("#checkpoints", DataTable).focus()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self._fill()

    def action_resume(self) -> None:
        entry = self._readable()
        if entry is not None:
            self.app.resume_job(entry.job_id)

    def action_view(self) -> None:
        entry = self._readable()
        if entry is not None:
            self.app.show_results(entry.job_id)

    def action_mark(self) -> None:
        entry = self._readable()
        if entry is None:
            return
        if entry.job_id in self.marked:
            self.marked.remove(entry.job_id)
        else:
            self.marked.append(entry.job_id)
        self._fill()

    def action_compare(self) -> None:
        if len(self.marked) < 2:
            self.notify("Mark two or more jobs with space, then press c.", severity="warning")
            return
        from tui_batch.ui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(list(self.marked)))

    def action_group(self) -> None:
        """The leaderboard of the group the selected job belongs to."""
        entry = self._readable()
        if entry is None:
            return
        if entry.group_id is None:
            self.notify(
                f"{entry.job_id} is not one of a group (a matrix's jobs, or several inputs run "
                "together).",
                severity="warning",
                markup=False,
            )
            return
        from tui_batch.ui.screens.group import GroupScreen

        self.app.push_screen(GroupScreen(entry.group_id))

    def action_stats(self) -> None:
        entry = self._readable()
        if entry is not None:
            self.app.show_stats(entry.job_id)

    def action_export(self) -> None:
        entry = self._readable()
        if entry is not None:
            self.app.export_job(entry.job_id)

    def action_delete(self) -> None:
        entry = self.selected()
        if entry is None:
            return

        def answer(yes: bool | None) -> None:
            if not yes:
                return
            try:
                if entry.unreadable:
                    self.app.processor.delete_unreadable(Path(entry.checkpoint_file))
                else:
                    self.app.processor.delete_checkpoint(entry.job_id)
            except (TuiBatchError, OSError) as exc:
                self.notify(str(exc), severity="error")
                return
            self.notify(f"Deleted {entry.job_id}.")
            self.reload()

        self.app.push_screen(
            ConfirmScreen(
                f"Delete checkpoint {entry.job_id}? Its results are lost unless exported.",
                yes="delete it",
                no="keep it",
            ),
            answer,
        )

    def action_back(self) -> None:
        if self.query_one("#filter", Input).has_focus:
            self.query_one("#checkpoints", DataTable).focus()
        else:
            self.app.pop_screen()


def _title(entry: JobSummary) -> Text:
    """The job's name in bold, then its model dim: jobs on one model told apart."""
    if not entry.name:
        return one_line(entry.model_id)
    text = one_line(entry.name, style="bold")
    text.append_text(one_line(f" · {entry.model_id}", style="dim"))
    return text
