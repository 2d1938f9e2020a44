"""Jobs over the same prompts, side by side: a summary, every matched prompt with each
job's answer (a page read at a time), filters by state and text, sorts by the gap in
length or latency, and a word-level diff of the answers in a detail pane."""

from __future__ import annotations

from collections import OrderedDict

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from tui_batch.core.compare import (
    ORDERS,
    STATES,
    CompareRow,
    CompareSummary,
    Comparison,
)
from tui_batch.core.compare_fields import answers_shown, field_changes
from tui_batch.core.errors import TuiBatchError
from tui_batch.core.scoring.figures import accuracy_text
from tui_batch.core.stats_text import row_mark
from tui_batch.ui.text import diff_text, literal, one_line
from tui_batch.ui.widgets.virtual_table import Column, VirtualTable

PAGE = 100
PAGES_KEPT = 8
STATE_STYLE = {
    "identical": "green",
    "different": "yellow",
    "failed": "bold red",
    "not run": "dim",
    "missing": "magenta",
    "regression": "bold red",
    "improved": "bold green",
}


class CompareScreen(Screen[None]):
    BINDINGS = [
        Binding("a", "state(None)", "All"),
        Binding("i", "state('identical')", "Identical"),
        Binding("d", "state('different')", "Different"),
        Binding("f", "state('failed')", "Failed"),
        Binding("r", "regressions", "Regressions"),
        Binding("o", "sort", "Sort"),
        Binding("slash", "search", "Search"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, job_ids: list[str]) -> None:
        super().__init__()
        self.job_ids = job_ids
        self.comparison: Comparison | None = None
        self.summary: CompareSummary | None = None
        self.state: str | None = None
        # Only prompts right in one job and wrong in another, regressions first.
        self.regressions_first = False
        self.order = "index"
        self.count = 0
        self._pages: OrderedDict[int, list[CompareRow]] = OrderedDict()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Matching prompts…", id="compare-summary")
        with Horizontal(id="compare-bar"):
            yield Static(id="compare-filters")
            yield Input(
                placeholder="/ search ids and answers, enter to apply",
                id="compare-search",
                compact=True,
            )
        with Horizontal(id="compare-body"):
            columns = [Column("State", 10), Column("Prompt", 24)]
            columns += [Column(job_id, 0) for job_id in self.job_ids]
            yield VirtualTable(columns, id="compare-rows")
            with VerticalScroll(id="compare-detail"):
                yield Static(id="compare-detail-text")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Compare " + " · ".join(self.job_ids)
        self.open()

    def on_unmount(self) -> None:
        if self.comparison is not None:
            self.comparison.close()

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def open(self) -> None:
        """Match the jobs' prompts in this thread (a second or so at 100,000 each)."""
        paths = [self.app.processor.store.path_for(job_id) for job_id in self.job_ids]
        try:
            comparison = Comparison(paths)
            summary = comparison.summary()
        except TuiBatchError as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._opened, comparison, summary)

    def _failed(self, message: str) -> None:
        self.notify(message, title="Cannot compare", severity="error")
        self.app.pop_screen()

    def _opened(self, comparison: Comparison, summary: CompareSummary) -> None:
        if not self.is_attached:
            comparison.close()
            return
        self.comparison, self.summary = comparison, summary
        self.query_one("#compare-summary", Static).update(summary_text(summary))
        self.query_one("#compare-rows", VirtualTable).focus()
        self._apply()

    def _apply(self) -> None:
        if self.comparison is None:
            return
        search = self.query_one("#compare-search", Input).value.strip() or None
        summary = self.summary
        if search is None and summary is not None:
            # Counted once, with the summary (regressions first only reorders).
            count = summary.rows if self.state is None else summary.states.get(self.state, 0)
            self._show_rows(count)
        else:  # a search reads every answer: counted in a worker, the screen answers keys
            self._show_rows(0)  # no page is read meanwhile: the comparison is busy
            self.query_one("#compare-filters", Static).update(Text("searching…", style="dim"))
            self._count(self.comparison, self.state, search)

    @work(thread=True, exclusive=True, group="compare-count", exit_on_error=False)
    def _count(self, comparison: Comparison, state: str | None, search: str | None) -> None:
        count = comparison.count(state, search)
        self.app.call_from_thread(self._counted, state, search, count)

    def _counted(self, state: str | None, search: str | None, count: int) -> None:
        if not self.is_attached:
            return
        current = self.query_one("#compare-search", Input).value.strip() or None
        if (state, search) == (self.state, current):  # not overtaken
            self._show_rows(count)

    def _show_rows(self, count: int) -> None:
        self.count = count
        self._pages.clear()
        self.query_one("#compare-rows", VirtualTable).set_rows(self.count, self._row)
        filters = Text()
        for state in (None, "identical", "different", "failed"):
            label = f" {state or 'all'} "
            filters.append(label, style="reverse bold" if state == self.state else "")
            filters.append(" ")
        if self.regressions_first:
            filters.append(" regressions first ", style="reverse bold yellow")
            filters.append(" ")
        filters.append(f"· sorted by {self.order} · {self.count:,} shown", style="italic")
        self.query_one("#compare-filters", Static).update(filters)
        self._show_detail()

    def row_at(self, position: int) -> CompareRow | None:
        if self.comparison is None or position >= self.count:
            return None
        page = position // PAGE
        if page not in self._pages:
            search = self.query_one("#compare-search", Input).value.strip() or None
            self._pages[page] = self.comparison.rows(
                self.order,
                self.state,
                search,
                offset=page * PAGE,
                limit=PAGE,
                regressions_first=self.regressions_first,
            )
            if len(self._pages) > PAGES_KEPT:
                self._pages.popitem(last=False)
        rows = self._pages[page]
        offset = position - page * PAGE
        return rows[offset] if offset < len(rows) else None

    def _row(self, position: int) -> list[Text]:
        row = self.row_at(position)
        if row is None:
            return [Text("")]
        mark = row_mark(row)
        cells = [Text(mark, style=STATE_STYLE.get(mark, "")), one_line(row.key)]
        # Structured answers field by field: only the fields that differ, where some do.
        for answer, shown in zip(row.answers, answers_shown(row), strict=True):
            if answer.index is None:
                cells.append(Text("(no such prompt)", style="dim"))
            elif answer.success is None:
                cells.append(Text("(not run)", style="dim"))
            elif not answer.success:
                cells.append(one_line(answer.error, style="red"))
            else:
                cells.append(one_line(shown))
        return cells

    def on_virtual_table_highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        table = self.query_one("#compare-rows", VirtualTable)
        row = self.row_at(table.cursor) if self.count else None
        detail = self.query_one("#compare-detail-text", Static)
        detail.update(detail_text(row, self.job_ids) if row else Text("No rows.", style="dim"))

    def action_state(self, state: str | None) -> None:
        self.state = state
        self._apply()

    def action_regressions(self) -> None:
        """Regressions first, then improvements, then the rest in the order chosen (a
        second press puts them back); every filter still shows all it holds."""
        if self.summary is not None and not any(side.scoring for side in self.summary.jobs):
            self.notify(
                "These jobs have no scores: run them with --expect COLUMN, or score them "
                "(tui-batch score JOB --expect COLUMN)",
                title="Regressions",
            )
            return
        self.regressions_first = not self.regressions_first
        self._apply()

    def action_sort(self) -> None:
        self.order = ORDERS[(ORDERS.index(self.order) + 1) % len(ORDERS)]
        self._apply()

    def action_search(self) -> None:
        self.query_one("#compare-search", Input).focus()

    @on(Input.Changed, "#compare-search")
    def _searched(self, event: Input.Changed) -> None:
        # A search reads every answer: it runs on enter, not on each key (but clears at once).
        if not event.value.strip():
            self._apply()

    @on(Input.Submitted, "#compare-search")
    def _search_done(self) -> None:
        self._apply()
        self.query_one("#compare-rows", VirtualTable).focus()

    def action_back(self) -> None:
        self.app.pop_screen()


def summary_text(summary: CompareSummary) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{summary.rows:,} prompts", style="bold")
    text.append(f" matched on {summary.matched_on}:  ")
    for state in STATES:
        count = summary.states.get(state, 0)
        text.append(f"{state} {count:,}", style=STATE_STYLE[state] if count else "dim")
        text.append("  ")
    scored = any(side.scoring for side in summary.jobs)
    if scored:
        text.append(
            f"regressions {summary.regressions:,}",
            style="bold red" if summary.regressions else "dim",
        )
        text.append(
            f"  improvements {summary.improvements:,}",
            style="green" if summary.improvements else "dim",
        )
    for side in summary.jobs:
        latency = "-" if side.mean_latency is None else f"{side.mean_latency:.2f} s"
        text.append(f"\n{side.job_id}  ", style="bold")
        text.append_text(one_line(side.model_id))
        text.append(
            f"  {side.results:,} results  {side.success_rate:.1f}% ok  "
            f"{side.tokens_output:,} tokens out  mean latency {latency}"
        )
        if scored:
            text.append("  accuracy ")
            text.append(
                accuracy_text(side.right, side.scored) if side.scoring else "not scored",
                style="bold",
            )
    if summary.fields:
        text.append("\nagreement by field  ", style="dim")
        for agreement in summary.fields:
            text.append_text(one_line(agreement.name, style="bold"))
            text.append(f" {agreement.rate:.1f}% ({agreement.agree:,}/{agreement.compared:,})  ")
    return text


def detail_text(row: CompareRow, job_ids: list[str]) -> Text:
    """The prompt, each answer, and where the first two differ, word by word."""
    text = Text()
    text.append_text(one_line(row.key, style="bold"))
    mark = row_mark(row)
    text.append(f"  {mark}\n\n", style=STATE_STYLE.get(mark, ""))
    text.append("Prompt\n", style="bold")
    text.append_text(literal(row.prompt))
    for job_id, answer in zip(job_ids, row.answers, strict=False):
        text.append(f"\n\n{job_id}", style="bold")
        if answer.duration is not None:
            text.append(f"  {answer.tokens_output} tokens, {answer.duration:.2f} s", style="dim")
        if answer.right is not None:
            text.append(
                "  right" if answer.right else "  wrong",
                style="green" if answer.right else "bold red",
            )
        text.append("\n")
        if answer.success is False:
            text.append_text(literal(answer.error, style="red"))
        else:
            text.append_text(literal(answer.text or "(no answer)"))
    first, second = row.answers[0], row.answers[1]
    if first.text is None or second.text is None or row.state != "different":
        return text
    changes = field_changes(first.text, second.text)
    if changes is None:
        text.append(f"\n\nWord diff ({job_ids[0]} → {job_ids[1]})\n", style="bold")
        text.append_text(diff_text(first.text, second.text))
        return text
    text.append(f"\n\nFields ({job_ids[0]} → {job_ids[1]})\n", style="bold")
    for change in changes:
        text.append_text(one_line(f"{change.name}: ", style="bold" if not change.same else "dim"))
        if change.same:
            text.append_text(one_line(change.before, style="dim"))
        else:
            text.append_text(one_line(change.before or "(none)", style="red strike"))
            text.append(" → ")
            text.append_text(one_line(change.after or "(none)", style="green underline"))
        text.append("\n")
    return text
