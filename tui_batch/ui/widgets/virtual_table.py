"""A table that renders only the rows on screen, so 100,000 rows cost what 30 do."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

RowRenderer = Callable[[int], Sequence[Text]]


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    width: int  # 0: take what is left (shared with the other 0 columns)
    justify: str = "left"


class VirtualTable(ScrollView, can_focus=True):
    """Rows come from `row(position)`; only the visible ones are ever rendered.

    `key(position)` maps a row position to what the row stands for (a prompt index),
    which is what the messages carry.
    """

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "jump(0)", "First", show=False),
        Binding("end,G", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Open", show=False),  # in help; the footer is full
    ]
    COMPONENT_CLASSES = {"virtual-table--header", "virtual-table--cursor"}
    DEFAULT_CSS = """
    VirtualTable { height: 1fr; }
    VirtualTable > .virtual-table--header { text-style: bold; background: $panel; }
    VirtualTable > .virtual-table--cursor { background: $block-cursor-blurred-background; }
    VirtualTable:focus > .virtual-table--cursor { background: $block-cursor-background;
        color: $block-cursor-foreground; text-style: bold; }
    """

    cursor: reactive[int] = reactive(0, always_update=True)

    class Highlighted(Message):
        def __init__(self, table: VirtualTable, key: int | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

    class Selected(Message):
        def __init__(self, table: VirtualTable, key: int) -> None:
            super().__init__()
            self.table = table
            self.key = key

    class Moved(Message):
        """The person moved the cursor (not code following a running job)."""

    def __init__(self, columns: Sequence[Column], **kwargs) -> None:
        super().__init__(**kwargs)
        self.columns = list(columns)
        self.count = 0
        self._row: RowRenderer = lambda position: ()
        self._key: Callable[[int], int] = lambda position: position

    def set_rows(
        self, count: int, row: RowRenderer, key: Callable[[int], int] | None = None
    ) -> None:
        """Point the table at new data; keeps the cursor where it can."""
        self.count = count
        self._row = row
        self._key = key or (lambda position: position)
        self.virtual_size = Size(self._total_width(), count + 1)
        if self.cursor >= count:
            self.cursor = max(0, count - 1)
        self.refresh()

    @property
    def cursor_key(self) -> int | None:
        return self._key(self.cursor) if self.count else None

    def _total_width(self) -> int:
        return sum(c.width + 1 for c in self.columns) + 20

    @property
    def _visible_width(self) -> int:
        """The width rows are drawn in: the widget's, less a vertical scrollbar's."""
        return self.scrollable_content_region.width

    def _widths(self) -> list[int]:
        """Fixed columns as given; the others share what is left (a scrollbar taken
        off first, so the last column is never under it)."""
        fixed = sum(c.width + 1 for c in self.columns if c.width)
        shared = sum(1 for c in self.columns if not c.width) or 1
        rest = max(10, (self._visible_width - fixed) // shared - (shared > 1))
        return [c.width or rest for c in self.columns]

    def render_line(self, y: int) -> Strip:
        width = self._visible_width
        if y == 0:
            style = self.get_component_rich_style("virtual-table--header")
            cells = [Text(c.title) for c in self.columns]
            return self._strip(cells, style, width)
        position = self.scroll_offset.y + y - 1
        base = self.rich_style
        if position >= self.count:
            return Strip.blank(width, base)
        style = (
            self.get_component_rich_style("virtual-table--cursor")
            if position == self.cursor
            else base
        )
        return self._strip(list(self._row(position)), style, width)

    def _strip(self, cells: list[Text], style: Style, width: int) -> Strip:
        line = Text(no_wrap=True, overflow="ellipsis")
        for cell, column, cell_width in zip(cells, self.columns, self._widths(), strict=False):
            cell = cell.copy()
            cell.truncate(cell_width, overflow="ellipsis", pad=True)
            if column.justify == "right":
                cell = Text(cell.plain.rstrip().rjust(cell_width), spans=[], style=cell.style)
            line.append_text(cell)
            line.append(" ")
        segments = list(line.render(self.app.console))
        segments = list(Segment.apply_style(segments, style))
        return Strip(segments).crop_extend(0, width, style)

    def watch_cursor(self, old: int, new: int) -> None:
        self._scroll_to_cursor()
        self.post_message(self.Highlighted(self, self.cursor_key))

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, force=True)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False, force=True)
        self.refresh()

    def follow(self, position: int) -> None:
        """Move the cursor without counting it as the person's move."""
        if self.count:
            self.cursor = max(0, min(self.count - 1, position))

    def _move(self, position: int) -> None:
        if self.count:
            self.cursor = max(0, min(self.count - 1, position))
            self.post_message(self.Moved())

    def action_cursor(self, delta: int) -> None:
        self._move(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move(self.cursor + direction * max(1, self.size.height - 2))

    def action_jump(self, position: int) -> None:
        self._move(self.count - 1 if position < 0 else position)

    def action_select(self) -> None:
        if self.count:
            self.post_message(self.Selected(self, self._key(self.cursor)))

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self._move(self.scroll_offset.y + event.y - 1)
            if event.chain == 2:
                self.action_select()

    def on_resize(self) -> None:
        self.virtual_size = Size(self._total_width(), self.count + 1)
