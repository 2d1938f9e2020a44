"""One job's figures: counts, speed, latency and first-token percentiles, a latency
histogram, tokens over time, and failures by reason (enter: those results). Computed in a
worker from the checkpoint, and again every second while the job runs."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Sparkline, Static

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.job_figures import JobStats
from tui_batch.core.stats import job_stats
from tui_batch.core.stats_text import stats_lines
from tui_batch.ui.text import literal, one_line

# While the job runs, its figures are read again this often (seconds).
REFRESH = 1.0
HISTOGRAM_WIDTH = 30
# The most rows of a confusion matrix shown at once (header included; it scrolls).
MATRIX_ROWS = 10
# Each label's figures, right of the confusion matrix.
FIGURES = ("precision", "recall", "F1")


class StatsScreen(Screen[None]):
    BINDINGS = [
        Binding("enter", "open_group", "Results of this reason"),
        Binding("v", "results", "All results"),
        Binding("m", "next_matrix", "Next matrix", show=False),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.stats: JobStats | None = None
        self.matrix = 0  # which confusion matrix is shown (a job may score several fields)
        self._reading = False  # a read of the figures is under way: the timer waits

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="stats-top"):
            yield Static(id="stats-figures")
            with Vertical(id="stats-charts"):
                yield Label("Latency of the prompts that succeeded", classes="chart-title")
                yield Static(id="latency-histogram")
                yield Label("Tokens generated over time", id="throughput-title")
                yield Sparkline([], id="throughput")
        yield Label(id="confusion-title")
        yield DataTable(id="confusion", cursor_type="cell")
        yield Label("Failures by reason  [dim](enter: their results)[/]", id="failures-title")
        yield DataTable(id="failure-groups", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"Stats of {self.job_id}"
        table = self.query_one("#failure-groups", DataTable)
        table.add_columns("count", "reason", "first prompts")
        self.query_one("#confusion-title", Label).display = False
        self.query_one("#confusion", DataTable).display = False
        self.refresh_stats()
        self.set_interval(REFRESH, self._refresh_if_running)

    def _refresh_if_running(self) -> None:
        running = self.app.queue.find(self.job_id) is not None
        if running and not self._reading:
            self.refresh_stats()

    def refresh_stats(self) -> None:
        self._reading = True
        self._read_stats()

    @work(thread=True, group="stats", exit_on_error=False)
    def _read_stats(self) -> None:
        try:
            path = self.app.processor.store.path_for(self.job_id)
            stats = job_stats(path)
        except TuiBatchError as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._show, stats)

    def _failed(self, message: str) -> None:
        self._reading = False
        self.notify(message, title="Cannot read the figures", severity="error")

    def _show(self, stats: JobStats) -> None:
        self._reading = False
        first = self.stats is None
        self.stats = stats
        figures = "\n".join(stats_lines(stats, charts=False))
        self.query_one("#stats-figures", Static).update(literal(figures))
        self.query_one("#latency-histogram", Static).update(histogram(stats))
        width = stats.bucket_seconds
        self.query_one("#throughput-title", Label).update(
            f"Tokens generated over time ({width} s a bar)"
        )
        by_offset = {offset: tokens for offset, tokens, _ in stats.throughput}
        last = max(by_offset, default=0)
        self.query_one("#throughput", Sparkline).data = [
            float(by_offset.get(offset, 0)) for offset in range(0, last + 1, width)
        ]
        table = self.query_one("#failure-groups", DataTable)
        row = table.cursor_row
        table.clear()
        for group in stats.failures:
            table.add_row(
                f"{group.count:,}",
                one_line(group.reason),
                ", ".join(map(str, group.examples)),
                key=group.reason,
            )
        if stats.failures:
            table.move_cursor(row=min(row, len(stats.failures) - 1))
        self._show_matrix()
        if first:
            matrix = self.query_one("#confusion", DataTable)
            (matrix if stats.confusions and not stats.failures else table).focus()

    def _show_matrix(self) -> None:
        """The confusion matrix of the field shown: expected labels down, answers across,
        the diagonal (right) in green, the rest in red where not 0."""
        stats = self.stats
        title = self.query_one("#confusion-title", Label)
        table = self.query_one("#confusion", DataTable)
        confusions = stats.confusions if stats is not None else []
        if not confusions:
            title.display = table.display = False
            return
        self.matrix %= len(confusions)
        confusion = confusions[self.matrix]
        more = f"; m: next of {len(confusions)} fields" if len(confusions) > 1 else ""
        macro = confusion.macro_f1()
        title.update(
            Text.assemble(
                (f"Confusion of {confusion.field}", "bold"),
                (f" (macro F1 {macro:.3f})" if macro is not None else "", "bold"),
                (
                    f": expected down, answered across, then each label's figures "
                    f"(enter: those results{more})",
                    "dim",
                ),
            )
        )
        cursor = table.cursor_coordinate
        table.clear(columns=True)
        headers = [Text("expected")]
        headers += [one_line(column) for column in confusion.columns]
        headers += [Text(name, style="dim") for name in FIGURES]
        # Keys by place: a label may be named like a heading ("expected", "F1").
        keys = ["row-label", *(f"answer-{n}" for n in range(len(confusion.columns)))]
        keys += [f"figure-{name}" for name in FIGURES]
        rows = []
        figures = {f.label: f for f in confusion.per_label()}
        for label in confusion.labels:
            cells: list[Text] = [one_line(label, style="bold")]
            for column in confusion.columns:
                count = confusion.count(label, column)
                style = "bold green" if column == label else ("red" if count else "dim")
                cells.append(Text(f"{count:,}", style=style, justify="right"))
            shown = figures[label]
            for value in (shown.precision, shown.recall, shown.f1):
                cells.append(Text("-" if value is None else f"{value:.3f}", style="dim"))
            rows.append(cells)
        # Each column as wide as its widest cell, given, so the table's size is known
        # now: left to measure itself when idle, after the layout that showed it, a
        # busy run once left the matrix sized 0 by 0.
        widths = [
            max(cell.cell_len for cell in column) for column in zip(headers, *rows, strict=True)
        ]
        for header, key, width in zip(headers, keys, widths, strict=True):
            table.add_column(header, key=key, width=width)
        for cells in rows:
            table.add_row(*cells, key=f"expected-{len(table.rows)}")
        padding = 2 * table.cell_padding
        table.styles.width = sum(widths) + padding * len(widths)
        table.styles.height = min(MATRIX_ROWS, len(rows) + 1)
        # On a cell of the matrix, where enter opens its results (not on a row's label).
        table.move_cursor(row=cursor.row, column=max(1, cursor.column))
        title.display = table.display = True

    def action_next_matrix(self) -> None:
        self.matrix += 1
        self._show_matrix()

    @on(DataTable.CellSelected, "#confusion")
    def _open_cell(self, event: DataTable.CellSelected) -> None:
        """Enter on a cell: the results expected as its row's label and answered as its
        column's."""
        if self.stats is None or not self.stats.confusions or event.coordinate.column == 0:
            return
        confusion = self.stats.confusions[self.matrix % len(self.stats.confusions)]
        if event.coordinate.column > len(confusion.columns):
            return  # a label's figures, not a cell of the matrix
        expected = confusion.labels[event.coordinate.row]
        answered = confusion.columns[event.coordinate.column - 1]
        self.app.show_results(self.job_id, cell=confusion.cell(expected, answered))

    def action_results(self) -> None:
        self.app.show_results(self.job_id)

    @on(DataTable.RowSelected, "#failure-groups")
    def action_open_group(self) -> None:
        if self.stats is None or not self.stats.failures:
            self.notify("No failures in this job.", severity="information")
            return
        table = self.query_one("#failure-groups", DataTable)
        group = self.stats.failures[min(table.cursor_row, len(self.stats.failures) - 1)]
        self.app.show_results(self.job_id, reason=group.reason)


def histogram(stats: JobStats) -> Text:
    """The latency histogram as horizontal bars, a line a bin."""
    if not stats.latency_histogram:
        return Text("no prompt has succeeded yet", style="dim")
    peak = max(count for _, count in stats.latency_histogram) or 1
    text = Text(no_wrap=True)
    for low, count in stats.latency_histogram:
        bar = "█" * round(HISTOGRAM_WIDTH * count / peak)
        text.append(f"{low:7.2f} s ", style="dim")
        text.append(bar, style="cyan")
        text.append(f" {count:,}\n" if count else "\n", style="dim")
    return text
