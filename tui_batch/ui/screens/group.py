"""A group's leaderboard (a matrix's jobs, or several inputs run as one group): its
variants best first, with `tui-batch stats GROUP`'s figures and accuracy bars. `enter`
opens a variant's results; `space` marks variants and `c` compares them (two marked and
`enter` too); `r` resumes every job of the group with work left, at once. Ranked in a worker from the checkpoints, one cursor a job."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.leaderboard import Leaderboard, accuracy_bars, leaderboard, leaderboard_rows
from tui_batch.ui.text import literal, one_line


class GroupScreen(Screen[None]):
    BINDINGS = [
        Binding("enter", "open", "Results (two marked: compare)"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("r", "resume", "Resume group"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, group_id: str) -> None:
        super().__init__()
        self.group_id = group_id
        self.board: Leaderboard | None = None
        self.marked: list[str] = []  # job ids, in the order marked

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Ranking the group {self.group_id}…", id="group-title")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="leaderboard")
        yield Static(id="group-bars")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"Group {self.group_id}"
        self._rank()

    @work(thread=True, group="group", exit_on_error=False)
    def _rank(self) -> None:
        try:
            jobs = self.app.processor.group_jobs(self.group_id)
            if not jobs:
                raise TuiBatchError(f"no job of group {self.group_id} is here")
            board = leaderboard(self.group_id, jobs)
        except (TuiBatchError, ValueError) as exc:
            self.app.call_from_thread(self._cannot, str(exc))
            return
        self.app.call_from_thread(self._show, board)

    def _cannot(self, message: str) -> None:
        self.query_one("#group-title", Static).update(one_line(f"No leaderboard: {message}"))

    def _show(self, board: Leaderboard) -> None:
        self.board = board
        title = f"Group {board.group_id}: {len(board.variants)} variants, ranked by {board.by}"
        self.query_one("#group-title", Static).update(one_line(title))
        header, *rows = leaderboard_rows(board)
        table = self.query_one("#leaderboard", DataTable)
        table.clear(columns=True)
        table.add_columns("", *header)
        for variant, row in zip(board.variants, rows, strict=True):
            mark = "•" if variant.job_id in self.marked else ""
            table.add_row(mark, *(one_line(cell) for cell in row), key=variant.job_id)
        self.query_one("#group-bars", Static).update(literal("\n".join(accuracy_bars(board))))
        table.focus()

    def _selected(self) -> str | None:
        table = self.query_one("#leaderboard", DataTable)
        if self.board is None or not self.board.variants:
            return None
        return self.board.variants[table.cursor_row].job_id

    @on(DataTable.RowSelected, "#leaderboard")
    def _row_chosen(self) -> None:  # enter on the table (it takes the key first)
        self.action_open()

    def action_open(self) -> None:
        if len(self.marked) >= 2:
            self.action_compare()
            return
        job_id = self._selected()
        if job_id is not None:
            self.app.show_results(job_id)

    def action_mark(self) -> None:
        job_id = self._selected()
        if job_id is None or self.board is None:
            return
        if job_id in self.marked:
            self.marked.remove(job_id)
        else:
            self.marked.append(job_id)
        row = self.query_one("#leaderboard", DataTable).cursor_row
        self._show(self.board)
        self.query_one("#leaderboard", DataTable).move_cursor(row=row)

    def action_resume(self) -> None:
        self.app.resume_group(self.group_id)

    def action_compare(self) -> None:
        if len(self.marked) < 2:
            self.notify(
                "Mark two variants with space, then press c.", severity="warning", markup=False
            )
            return
        from tui_batch.ui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(list(self.marked)))
