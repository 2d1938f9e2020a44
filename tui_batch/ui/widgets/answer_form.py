"""Job setup's Answers field: free text, a schema every answer must fit, or one of a few
choices; with a live preview of the JSON Schema it becomes, or of what is wrong, in one
line."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Label, Select, Static

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.structured.schema import AnswerSchema, parse_choices, parse_schema
from tui_batch.ui.text import one_line

KINDS = [("free text", "text"), ("a schema", "schema"), ("one of some choices", "choices")]
PLACEHOLDERS = {
    "text": "",
    "schema": "sentiment: positive|negative, stars: int 1..5, headline: str (or a .json file)",
    "choices": "positive,negative,neutral",
}
PREVIEW_WIDTH = 400


class AnswerForm(Vertical):
    """What every answer must be. Its text is checked by the core as `--schema` or
    `--choices` is; the preview says at once what that makes of it."""

    def compose(self) -> ComposeResult:
        yield Label("Answers")
        yield Select(KINDS, value="text", allow_blank=False, id="answer-kind", compact=True)
        yield Input(id="schema", compact=True)
        yield Static(id="schema-preview")

    def on_mount(self) -> None:
        self._show_kind()

    @property
    def kind(self) -> str:
        return str(self.query_one("#answer-kind", Select).value)

    def values(self) -> dict[str, Any]:
        """The setting as typed (`schema` or `choices`), for `RunSpec.from_values`."""
        text = self.query_one("#schema", Input).value.strip()
        if self.kind == "text" or not text:
            return {}
        return {self.kind: text}

    def schema(self) -> AnswerSchema | None:
        """The schema as typed, or None (free text, or a mistake the preview shows)."""
        try:
            values = self.values()
            if "choices" in values:
                return parse_choices(values["choices"])
            return parse_schema(values["schema"]) if "schema" in values else None
        except TuiBatchError:
            return None

    def restore(self, schema: AnswerSchema | None) -> None:
        """Show a spec's schema (None: free text)."""
        kind, text = "text", ""
        if schema is not None:
            kind = "choices" if schema.choices else "schema"
            value = schema.setting_value()
            text = ",".join(value) if isinstance(value, list) else str(value)
            if "\n" in text:  # a short form with hints, one a line: as JSON, on one line
                text = json.dumps(schema.schema, ensure_ascii=False)
        self.query_one("#answer-kind", Select).value = kind
        self.query_one("#schema", Input).value = text
        self._show_kind()
        self._preview()

    @on(Select.Changed, "#answer-kind")
    def _kind_changed(self) -> None:
        self._show_kind()
        self._preview()

    def _show_kind(self) -> None:
        """The text field and its preview are there for a schema or choices only."""
        field = self.query_one("#schema", Input)
        field.placeholder = PLACEHOLDERS[self.kind]
        field.display = self.query_one("#schema-preview").display = self.kind != "text"

    @on(Input.Changed, "#schema")
    def _text_changed(self) -> None:
        self._preview()

    def _preview(self) -> None:
        preview = self.query_one("#schema-preview", Static)
        text = self.query_one("#schema", Input).value.strip()
        if self.kind == "text" or not text:
            preview.update("")
            return
        try:
            schema = parse_choices(text) if self.kind == "choices" else parse_schema(text)
        except TuiBatchError as exc:
            preview.update(one_line(str(exc), style="red"))
            return
        shown = json.dumps(schema.schema, ensure_ascii=False, separators=(", ", ": "))
        line = Text("JSON Schema ", style="dim")
        line.append_text(one_line(shown[:PREVIEW_WIDTH], style="green"))
        preview.update(line)
