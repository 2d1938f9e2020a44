"""A text area that highlights Jinja2 templates: tags, comments, strings, keywords, and
the TOML front matter. Textual highlights through tree-sitter grammars and has none for
Jinja; this fills the same per-line highlight map from regular expressions instead."""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Any

from textual.binding import Binding
from textual.widgets import TextArea

from tui_batch.core.templates.template import FRONT_MATTER

_TAG = re.compile(r"\{\{.*?(?:\}\}|$)|\{%.*?(?:%\}|$)|\{#.*?(?:#\}|$)", re.DOTALL)
_INSIDE = re.compile(
    r"(?P<string>'[^']*'|\"[^\"]*\")"
    r"|(?P<number>\b\d+(?:\.\d+)?\b)"
    r"|(?P<filter>\|\s*[A-Za-z_]\w*)"
    r"|(?P<keyword>\b(?:if|elif|else|endif|for|endfor|in|not|and|or|is|set|endset|"
    r"macro|endmacro|raw|endraw|with|endwith|filter|endfilter|true|false|none|loop)\b)"
)
_FRONT_KEY = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*=", re.MULTILINE)
_FRONT_STRING = re.compile(r"=\s*('[^'\n]*'|\"(?:[^\"\\\n]|\\.)*\")")


class TemplateEditor(TextArea):
    """The template's text, highlighted as Jinja2 as it is typed. Tab indents (templates
    are code), so escape is the way out: the footer says so while it has the focus."""

    BINDINGS = [Binding("escape", "leave", "Leave editor (tab indents)")]

    def __init__(self, text: str = "", **kwargs: Any) -> None:
        super().__init__(text, soft_wrap=True, show_line_numbers=True, tab_behavior="indent",
                         **kwargs)  # fmt: skip

    def action_leave(self) -> None:
        self.screen.focus_next()

    def _build_highlight_map(self) -> None:
        self._line_cache.clear()
        highlights = self._highlights
        highlights.clear()
        text = self.text
        lines = text.split("\n")
        starts = [0]
        for line in lines[:-1]:
            starts.append(starts[-1] + len(line) + 1)

        def mark(start: int, end: int, name: str) -> None:
            """Highlight text[start:end], line by line, in UTF-8 byte columns."""
            row = bisect_right(starts, start) - 1
            while start < end and row < len(lines):
                line_end = starts[row] + len(lines[row])
                stop = min(end, line_end)
                line = lines[row]
                first = len(line[: start - starts[row]].encode("utf-8"))
                last = len(line[: stop - starts[row]].encode("utf-8"))
                if last > first:
                    highlights[row].append((first, last, name))
                row += 1
                start = line_end + 1 if row < len(starts) else end

        body = 0
        if lines and lines[0].strip() == FRONT_MATTER:
            close = next(
                (i for i in range(1, len(lines)) if lines[i].strip() == FRONT_MATTER), None
            )
            end = starts[close] + len(lines[close]) if close is not None else len(text)
            mark(0, len(lines[0]), "heading.marker")
            if close is not None:
                mark(starts[close], end, "heading.marker")
            head = text[:end]
            for found in _FRONT_KEY.finditer(head):
                mark(found.start(1), found.end(1), "json.label")
            for found in _FRONT_STRING.finditer(head):
                mark(found.start(1), found.end(1), "string")
            for found in re.finditer(r"#[^\n]*", head):
                if not any(q in head[head.rfind("\n", 0, found.start()) : found.start()]
                           for q in "\"'"):  # fmt: skip
                    mark(found.start(), found.end(), "comment")
            body = end
        for tag in _TAG.finditer(text, body):
            start, end = tag.span()
            if text.startswith("{#", start):
                mark(start, end, "comment")
                continue
            mark(start, start + 2, "punctuation.special")
            closed = text[end - 2 : end] in ("}}", "%}")
            if closed:
                mark(end - 2, end, "punctuation.special")
            for part in _INSIDE.finditer(text, start + 2, end - 2 if closed else end):
                name = part.lastgroup or "keyword"
                mark(part.start(), part.end(), "function" if name == "filter" else name)
        self.refresh()
