"""One job's results: filter, search, a detail pane, copy, export, re-run failures.

Rows are read page by page from the checkpoint through `core.results.ResultsView`, so a
job of ten million results opens in a page of memory (its indices too: a `Selection`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.jobs import BatchResult, Prompt
from tui_batch.core.results import FILTERS, ResultsView
from tui_batch.core.scoring.figures import ConfusionCell
from tui_batch.ui.screens.modals import ResultScreen, result_details, status_text
from tui_batch.ui.text import one_line, prompt_cell, token_cells
from tui_batch.ui.widgets.virtual_table import Column, VirtualTable

PAGE = 100
PAGES_KEPT = 20
COLUMNS = [
    Column("#", 6, "right"),
    Column("Status", 7),
    Column("Prompt", 24),
    Column("Response / error", 0),
    Column("Out", 5, "right"),
    Column("Time", 7, "right"),
]


class ResultsScreen(Screen[None]):
    BINDINGS = [
        Binding("a", "show('all')", "All"),
        Binding("f", "show('failed')", "Failed"),
        Binding("s", "show('succeeded')", "Succeeded", show=False),
        Binding("i", "show('invalid')", "Invalid", show=False),
        Binding("w", "show('wrong')", "Wrong", show=False),
        Binding("slash", "search", "Search"),
        Binding("c", "copy", "Copy"),
        Binding("e", "export", "Export"),
        Binding("R", "rerun", "Re-run failed"),
        Binding("t", "stats", "Stats"),
        Binding("h", "thought", "Thought", show=False),
        Binding("escape", "back", "Back"),
        # The footer has room for the keys of this screen; ctrl+g is in help.
        Binding("ctrl+g", "app.progress", "Progress", show=False),
    ]

    def __init__(
        self, job_id: str, reason: str | None = None, cell: ConfusionCell | None = None
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.filter = "failed" if reason else "all"
        self.reason = reason  # a failure group from the stats screen
        self.cell = cell  # a cell of a confusion matrix, from the stats screen
        self.indices: Sequence[int] = []  # a `Selection`: read a page at a time
        self._pages: OrderedDict[int, dict[int, tuple[BatchResult, Prompt]]] = OrderedDict()
        self.id_field: str | None = None  # a template job's id column
        self.template = False  # a template job: its prompts are told apart by their record
        self.thought_open = False  # a thinking model's thought shown whole in the detail pane

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="results-title")
        with Horizontal(id="results-bar"):
            yield Static(id="filters")
            yield Input(
                placeholder="/ search prompts, responses and errors", id="search", compact=True
            )
        with Horizontal(id="results-body"):
            yield VirtualTable(COLUMNS, id="results")
            with VerticalScroll(id="detail"):
                yield Static(id="detail-text")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"Results of {self.job_id}"
        try:
            job = self.app.processor.job_summary(self.job_id)
            self.view = ResultsView(job.checkpoint_file)
            self.id_field = job.template.id_field if job.template is not None else None
            self.template = job.template is not None
        except TuiBatchError as exc:
            self.view = None
            self.notify(str(exc), title="Cannot open results", severity="error")
            self.app.pop_screen()
            return
        self.counts = self.view.counts()
        # The invalid filter is offered for a job whose answers have a schema, the wrong
        # one for a job scored against expected answers.
        offered = {"invalid": job.schema is not None, "wrong": job.scoring is not None}
        self.filters = [f for f in FILTERS if offered.get(f, True) or self.counts[f]]
        self.scoring, self.schema = job.scoring, job.schema
        self.query_one("#results-title", Static).update(
            Text.assemble(
                ("Job ", "dim"),
                (self.job_id, "bold"),
                ("  model ", "dim"),
                one_line(job.model_id),
                ("  status ", "dim"),
                job.status.value,
                ("  results ", "dim"),
                f"{self.counts['all']}/{job.total_prompts}",
            )
        )
        self.query_one("#results", VirtualTable).focus()
        self._apply()

    def on_unmount(self) -> None:
        if self.view is not None:
            self.view.close()

    def _apply(self) -> None:
        search = self.query_one("#search", Input).value.strip()
        self.indices = self.view.select(self.filter, search, self.reason, self.cell)
        self._pages.clear()
        table = self.query_one("#results", VirtualTable)
        table.set_rows(len(self.indices), self._row, self.indices.__getitem__)
        filters = Text()
        for name in self.filters:
            label = f" {name} ({self.counts[name]}) "
            filters.append(label, style="reverse bold" if name == self.filter else "")
            filters.append(" ")
        if self.reason:
            filters.append_text(one_line(f"reason: {self.reason} ", style="bold yellow"))
        if self.cell:
            filters.append_text(one_line(f"{self.cell.describe()} ", style="bold yellow"))
        if search or self.reason or self.cell:
            filters.append(f"· {len(self.indices)} match", style="italic")
        self.query_one("#filters", Static).update(filters)
        self._show_detail()

    def _entry_at(self, position: int) -> tuple[BatchResult, Prompt] | None:
        page = position // PAGE
        if page not in self._pages:
            chunk = self.indices[page * PAGE : (page + 1) * PAGE]
            fetched = self.view.fetch_with_prompts(chunk)
            self._pages[page] = {result.prompt_index: (result, p) for result, p in fetched}
            if len(self._pages) > PAGES_KEPT:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(page)
        return self._pages[page].get(self.indices[position])

    def result_at(self, position: int) -> BatchResult | None:
        entry = self._entry_at(position)
        return None if entry is None else entry[0]

    def _row(self, position: int) -> list[Text]:
        entry = self._entry_at(position)
        if entry is None:
            return [Text(str(self.indices[position]))]
        result, prompt = entry
        status = status_text(result)
        if result.success:
            answer = one_line(result.response_text)
        else:
            answer = one_line(result.error_message, style="yellow" if result.invalid else "red")
        if result.empty:
            answer = Text("(empty answer)", style="dim italic")
        return [
            Text(str(result.prompt_index)),
            status,
            prompt_cell(prompt, result.prompt_index, self.id_field, self.template),
            answer,
            token_cells(result)[1],
            # Served from the answer cache: no time of its own here.
            Text("cached", style="cyan")
            if result.cached_from is not None
            else Text(f"{result.duration:.2f}s"),
        ]

    def _current(self) -> BatchResult | None:
        table = self.query_one("#results", VirtualTable)
        return self.result_at(table.cursor) if table.count else None

    def _show_detail(self) -> None:
        result = self._current()
        detail = self.query_one("#detail-text", Static)
        if result is None:
            detail.update(Text("No results match.", style="dim"))
            return
        detail.update(result_details(result, self.scoring, self.schema, self.thought_open))

    def action_thought(self) -> None:
        """Open or fold the thought under the answer in the detail pane."""
        self.thought_open = not self.thought_open
        self._show_detail()

    def on_virtual_table_highlighted(self) -> None:
        self._show_detail()

    def on_virtual_table_selected(self) -> None:
        self.action_open()

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        self._apply()

    @on(Input.Submitted, "#search")
    def _search_done(self) -> None:
        self.query_one("#results", VirtualTable).focus()

    def action_show(self, name: str) -> None:
        if name not in self.filters:
            why = {"wrong": "is not scored (run it with --expect COLUMN)"}
            self.notify(
                f"Job {self.job_id} {why.get(name, 'has no schema')}: no {name} answers",
                title="Results",
            )
            return
        self.filter = name
        self.reason = self.cell = None
        self._apply()

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_stats(self) -> None:
        self.app.show_stats(self.job_id)

    def action_open(self) -> None:
        result = self._current()
        if result is not None:
            self.app.push_screen(ResultScreen(result, self.scoring, self.schema))

    def action_copy(self) -> None:
        result = self._current()
        if result is not None:
            self.app.copy_to_clipboard(result.response_text)
            self.notify(f"Response of prompt {result.prompt_index} copied to the clipboard.")

    def action_export(self) -> None:
        """Export the job; while a filter or a search narrows the table, offer only the
        results shown."""
        search = self.query_one("#search", Input).value.strip()
        narrowed = self.filter != "all" or bool(search) or self.reason or self.cell
        shown = None
        if narrowed:
            what = [self.filter] if self.filter != "all" else []
            what += [f"reason {self.reason!r}"] if self.reason else []
            what += [self.cell.describe()] if self.cell else []
            what += [f"search {search!r}"] if search else []
            shown = (list(self.indices), ", ".join(what))
        self.app.export_job(self.job_id, shown)

    def action_rerun(self) -> None:
        if not self.counts["failed"] and not self.counts["invalid"]:
            self.notify("No failed prompts to re-run.", severity="warning")
            return
        self.app.rerun_failed(self.job_id)

    def action_back(self) -> None:
        if self.query_one("#search", Input).has_focus:
            self.query_one("#results", VirtualTable).focus()
        else:
            self.app.pop_screen()
