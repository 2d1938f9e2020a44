"""The template tab of job setup: a Jinja2 template (typed, or read from a file), the data
file whose records fill it, and a live preview of the first prompts and of every record
that cannot be rendered, recomputed in a worker as you type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Vertical
from textual.timer import Timer
from textual.widgets import Input, Label, Static, TextArea
from textual.worker import get_current_worker

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.templates.records import DATA_FORMATS, data_file, iter_records
from tui_batch.core.templates.source import read_template
from tui_batch.core.templates.template import PromptTemplate, render_all
from tui_batch.ui.text import literal
from tui_batch.ui.widgets.path_input import PathSuggester
from tui_batch.ui.widgets.template_editor import TemplateEditor
from tui_batch.ui.widgets.template_preview import LongPrompts, Preview

# Typing pauses this long before the preview is recomputed.
PREVIEW_DELAY = 0.3
# The preview reports progress through a big data file every this many records.
PROGRESS_EVERY = 20_000
EXAMPLE = "Write a short headline for this review of a {{ product }}.\n\nReview: {{ review }}\n"


class TemplateForm(Vertical):
    """A template and the data that fills it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._timer: Timer | None = None
        self._loaded_text: str | None = None  # the template file's text, as read
        # The local model, its context and the system prompt, for the length check
        # (no model: on servers); job setup keeps it current.
        self.context: tuple[str | None, int, str | None] = (None, 0, None)

    def compose(self) -> ComposeResult:
        yield Label(
            f"Data file  [dim]({' '.join(DATA_FORMATS)}, or job:ID for a job's results; "
            "ctrl+o browse, → accepts)[/]"
        )
        yield Input(
            placeholder="path/to/records.csv",
            suggester=PathSuggester(DATA_FORMATS),
            id="data-path",
            compact=True,
        )
        with Grid(id="template-fields"):
            yield Label("Id column")
            yield Input(placeholder="(the record number)", id="id-field", compact=True)
            yield Label("Template file")
            yield Input(
                placeholder="(optional) a file to load the template from",
                suggester=PathSuggester((".jinja", ".j2", ".txt", ".md")),
                id="template-path",
                compact=True,
            )
        yield Label(
            "Template  [dim](Jinja2, {{ column }}; +++ front matter +++: system, options)[/]"
        )
        yield TemplateEditor(EXAMPLE, id="template-editor")
        yield Static(id="template-preview")

    def on_mount(self) -> None:
        self.schedule_preview()

    # What the form holds --------------------------------------------------------------

    @property
    def text(self) -> str:
        return self.query_one(TemplateEditor).text

    @property
    def data_path(self) -> Path | None:
        value = self.query_one("#data-path", Input).value.strip()
        return Path(value).expanduser() if value else None

    @property
    def id_field(self) -> str | None:
        return self.query_one("#id-field", Input).value.strip() or None

    @property
    def template_path(self) -> Path | None:
        """The template file, while the editor still holds what it says."""
        value = self.query_one("#template-path", Input).value.strip()
        if not value or self._loaded_text is None or self._loaded_text != self.text:
            return None
        return Path(value).expanduser()

    def values(self) -> dict[str, Any]:
        """The tab's settings, keyed as a job file keys them."""
        path = self.template_path
        values: dict[str, Any] = {"template": path} if path else {"template_text": self.text}
        values.update(data=self.data_path, id_field=self.id_field)
        return values

    def restore(self, values: dict[str, Any]) -> None:
        """Fill the tab from a job file's values or the last setup."""
        self.query_one("#data-path", Input).value = str(values.get("data") or "")
        self.query_one("#id-field", Input).value = values.get("id_field") or ""
        if values.get("template"):
            self.query_one("#template-path", Input).value = str(values["template"])
            self.load_template()
        elif values.get("template_text") is not None:
            self.query_one("#template-path", Input).value = ""
            self._loaded_text = None
            self.query_one(TemplateEditor).load_text(values["template_text"])
        self.schedule_preview()

    def set_data_path(self, path: Path) -> None:
        self.query_one("#data-path", Input).value = str(path)

    @on(Input.Submitted, "#template-path")
    def load_template(self) -> None:
        path = Path(self.query_one("#template-path", Input).value.strip()).expanduser()
        try:
            text = read_template(path)
        except TuiBatchError as exc:
            self.notify(str(exc), title="Template", severity="error")
            return
        self._loaded_text = text
        self.query_one(TemplateEditor).load_text(text)

    # The live preview -----------------------------------------------------------------

    @on(TextArea.Changed, "#template-editor")
    @on(Input.Changed, "#data-path")
    @on(Input.Changed, "#id-field")
    def schedule_preview(self) -> None:
        """Recompute the preview once typing pauses."""
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(PREVIEW_DELAY, self._start_preview)

    @property
    def preview_scheduled(self) -> bool:
        """A preview waits for typing to pause (its worker not started yet)."""
        return self._timer is not None

    def _start_preview(self) -> None:
        self._timer = None
        model, n_ctx, system = self.context
        preview = Preview(self.id_field, LongPrompts(model, n_ctx, system))
        self.preview(self.text, self.data_path, preview)

    @work(thread=True, exclusive=True, group="template-preview", exit_on_error=False)
    def preview(self, text: str, data: Path | None, preview: Preview) -> None:
        """Render the records in this thread; show the first few and every problem."""
        worker = get_current_worker()
        try:
            template = PromptTemplate(text, "template")
        except TuiBatchError as exc:
            self._post(literal(str(exc), style="bold red"))
            return
        names = ", ".join(sorted(template.variables)) or "none"
        try:
            found = data_file(data) if data is not None else None
        except TuiBatchError as exc:
            self._post(literal(f"{exc}. The template uses: {names}", style="dim"))
            return
        if found is None or not found.is_file():
            said = "No data file yet" if data is None else f"Data file not found: {data}"
            self._post(literal(f"{said}. The template uses: {names}", style="dim"))
            return
        try:
            for item in render_all(template, iter_records(data)):
                if worker.is_cancelled:
                    return
                preview.add(item)
                if preview.count % PROGRESS_EVERY == 0:
                    self._post(preview.report(done=False))
        except TuiBatchError as exc:
            self._post(literal(str(exc), style="bold red"))
            return
        preview.count_tokens()
        if not worker.is_cancelled:
            self._post(preview.report(done=True))

    def _post(self, text: Text) -> None:
        self.app.call_from_thread(self.query_one("#template-preview", Static).update, text)
