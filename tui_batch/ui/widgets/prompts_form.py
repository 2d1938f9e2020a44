"""The prompts tab of job setup: a prompts file, or prompts typed one per line, with a
preview of what will run and warnings (empty, duplicate, too long for the context).

A file is read in a worker a chunk at a time, as a job reads it: the preview shows its
first prompts at once, then counts the rest, in memory that does not grow with it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Label, Static, TextArea
from textual.worker import get_current_worker

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.jobs import Prompt
from tui_batch.core.paths import is_file
from tui_batch.core.prompt_stream import PromptStream, first_chunk
from tui_batch.core.prompts import PromptFile, prompts_from_lines
from tui_batch.ui.text import literal, one_line
from tui_batch.ui.widgets.path_input import PathSuggester
from tui_batch.ui.widgets.template_preview import LongPrompts

PREVIEW_PROMPTS = 5
PREVIEW_WARNINGS = 8


@dataclass(slots=True)
class FilePreview:
    """What the preview knows of a prompts file: its prompts counted so far, the first
    few, its warnings, and (when all is read) those too long for the context."""

    path: Path
    count: int = 0
    done: bool = False
    error: str | None = None
    first: list[Prompt] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def too_long(long: LongPrompts) -> list[str]:
    """The warnings for the prompts that do not fit the context, by line."""
    return [
        f"line {prompt.line}: too long for the context ({tokens} tokens with the chat "
        f"template; the context holds {long.n_ctx}): it will fail"
        for prompt, tokens in long.count()
    ]


class PromptsForm(Vertical):
    """Where the prompts come from when they are not made from a template."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.file_preview: FilePreview | None = None
        self._reads = 0  # files read for the preview: only the latest read's reports show
        self.long_warnings: list[str] = []  # the typed prompts'
        # The local model, its context and the system prompt, for the length check
        # (no model: on servers); job setup keeps it current.
        self.context: tuple[str | None, int, str | None] = (None, 0, None)

    def compose(self) -> ComposeResult:
        yield Label("Prompts file  [dim](ctrl+o browse, → accepts completion)[/]")
        yield Input(
            placeholder="path/to/prompts.txt | .json | .jsonl | .csv",
            suggester=PathSuggester(),
            id="prompts-path",
        )
        yield Label("…or type prompts, one per line  [dim](used when no file is given)[/]")
        yield TextArea(id="typed", soft_wrap=True, show_line_numbers=True)
        yield Static(id="preview")

    @property
    def path_text(self) -> str:
        return self.query_one("#prompts-path", Input).value.strip()

    def set_path(self, path: str | Path | None) -> None:
        self.query_one("#prompts-path", Input).value = str(path or "")
        self.load_file()

    @on(Input.Submitted, "#prompts-path")
    def _path_submitted(self) -> None:
        self.load_file()

    @on(Input.Changed, "#prompts-path")
    def _path_changed(self, event: Input.Changed) -> None:
        if not event.value or is_file(Path(event.value).expanduser()):
            self.load_file()

    @on(TextArea.Changed, "#typed")
    def _typed_changed(self) -> None:
        if not self.path_text:
            self.long_warnings = []
            self.show_preview()

    def set_context(self, context: tuple[str | None, int, str | None]) -> None:
        """The model, context and system prompt changed: check the lengths again."""
        if context != self.context:
            self.context = context
            self.load_file()

    def load_file(self) -> None:
        """Preview the file the path names (in a worker), or the typed prompts."""
        if not self.path_text:
            self.file_preview = None
            self.show_preview()
            typed = self.typed_prompts()
            if typed is not None and self.context[0] is not None:
                self.count_tokens(typed, self.context)
            return
        path = Path(self.path_text).expanduser()
        self.file_preview = FilePreview(path)
        self.show_preview()
        self._reads += 1
        self.read_file(path, self.context, self._reads)

    @work(thread=True, exclusive=True, group="prompts-preview", exit_on_error=False)
    def read_file(self, path: Path, context: tuple[str | None, int, str | None], read: int) -> None:
        """Read the file a chunk at a time: its first prompts shown at once, the rest
        counted (and looked over for prompts too long for the context) as they come.
        Read number `read` reports only while it is the latest: one overtaken by another
        (a new path, a new model) never paints over it."""
        worker = get_current_worker()
        preview, long = FilePreview(path), LongPrompts(*context)
        try:
            stream = PromptStream(prompts_file=path)
            chunk = first_chunk(stream)
            preview.first = chunk[:PREVIEW_PROMPTS]
            while True:
                preview.count += len(chunk)
                for prompt in chunk:
                    long.consider(prompt)
                preview.warnings = stream.all_warnings()
                if stream.done or worker.is_cancelled:
                    break
                self.app.call_from_thread(self._show_file, read, replace(preview))
                chunk = stream.chunk()
        except TuiBatchError as exc:
            preview.error = str(exc)
        preview.warnings += too_long(long)
        preview.done = True
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show_file, read, preview)

    def _show_file(self, read: int, preview: FilePreview) -> None:
        if read == self._reads and self.file_preview is not None:
            self.file_preview = preview
            self.show_preview()

    def typed_prompts(self) -> PromptFile | None:
        """The prompts typed, one per line (None when there are none)."""
        typed = self.query_one("#typed", TextArea).text
        return prompts_from_lines(typed.splitlines()) if typed.strip() else None

    def show_preview(self) -> None:
        preview = self.query_one("#preview", Static)
        found = self.file_preview
        if found is not None:
            if found.error:
                preview.update(literal(found.error, style="bold red"))
                return
            more = "" if found.done else " so far…"
            shown = self._preview_text(
                f"{found.count:,} prompts{more}", str(found.path), found.first, found.count
            )
            self._add_warnings(shown, found.warnings)
            preview.update(shown)
            return
        source = self.typed_prompts()
        if source is None or not source.prompts:
            preview.update(Text("No prompts yet: give a file or type some.", style="dim"))
            return
        shown = self._preview_text(
            f"{len(source.prompts)} prompts", "typed", source.prompts, len(source.prompts)
        )
        self._add_warnings(shown, [str(w) for w in source.warnings] + self.long_warnings)
        preview.update(shown)

    @staticmethod
    def _preview_text(counted: str, where: str, first: list[Prompt], count: int) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(counted, style="bold")
        text.append(f" from {where}\n")
        for prompt in first[:PREVIEW_PROMPTS]:
            text.append(f"{prompt.line or '-':>5}  ", style="dim")
            text.append_text(one_line(prompt.text[:200]))
            text.append("\n")
        if count > PREVIEW_PROMPTS:
            text.append(f"       … {count - PREVIEW_PROMPTS:,} more\n", style="dim")
        return text

    @staticmethod
    def _add_warnings(text: Text, warnings: list[str]) -> None:
        if not warnings:
            return
        text.append(f"{len(warnings)} warning(s)\n", style="bold yellow")
        for warning in warnings[:PREVIEW_WARNINGS]:
            text.append_text(one_line(f"  {warning}", style="yellow"))
            text.append("\n")
        if len(warnings) > PREVIEW_WARNINGS:
            text.append(f"  … {len(warnings) - PREVIEW_WARNINGS} more\n", style="yellow")

    @work(
        thread=True,
        exclusive=True,
        group="validate",
        exit_on_error=False,
        description="Counting prompt tokens",
    )
    def count_tokens(self, source: PromptFile, context: tuple[str | None, int, str | None]) -> None:
        """Warn about typed prompts too long for the context."""
        long = LongPrompts(*context)
        for prompt in source.prompts:
            long.consider(prompt)
        self.app.call_from_thread(self._long_prompts_found, source, too_long(long))

    def _long_prompts_found(self, source: PromptFile, warnings: list[str]) -> None:
        typed = self.typed_prompts()
        if typed is not None and typed.prompts == source.prompts and self.file_preview is None:
            self.long_warnings = warnings
            self.show_preview()
