"""The prompts tab of job setup: a prompts file, or prompts typed one per line, with a
preview of what will run and warnings (empty, duplicate, too long for the context)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, Static, TextArea

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.paths import is_file
from tui_batch.core.prompts import PromptFile, PromptWarning, load_prompt_file, prompts_from_lines
from tui_batch.ui.text import literal, one_line
from tui_batch.ui.widgets.path_input import PathSuggester

PREVIEW_PROMPTS = 5
PREVIEW_WARNINGS = 8


class PromptsForm(Vertical):
    """Where the prompts come from when they are not made from a template."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded: PromptFile | None = None
        self.load_error: str | None = None
        self.long_warnings: list[PromptWarning] = []

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
        path = Path(event.value).expanduser()
        if not event.value:
            self.loaded, self.load_error = None, None
            self.show_preview()
        elif is_file(path):
            self.load_file()

    @on(TextArea.Changed, "#typed")
    def _typed_changed(self) -> None:
        if not self.path_text:
            self.show_preview()

    def load_file(self) -> None:
        if not self.path_text:
            self.loaded, self.load_error = None, None
            self.show_preview()
            return
        try:
            self.loaded, self.load_error = load_prompt_file(Path(self.path_text).expanduser()), None
        except TuiBatchError as exc:
            self.loaded, self.load_error = None, str(exc)
        self.long_warnings = []
        self.show_preview()
        self.post_message(self.Loaded())

    class Loaded(Message):
        """A prompts file was read: its prompts' lengths can be checked."""

    def current_prompts(self) -> PromptFile | None:
        """The prompts to run: the file when a path is given, else the typed lines."""
        if self.path_text:
            return self.loaded
        typed = self.query_one("#typed", TextArea).text
        return prompts_from_lines(typed.splitlines()) if typed.strip() else None

    def show_preview(self) -> None:
        preview = self.query_one("#preview", Static)
        if self.load_error:
            preview.update(literal(self.load_error, style="bold red"))
            return
        source = self.current_prompts()
        if source is None or not source.prompts:
            preview.update(Text("No prompts yet: give a file or type some.", style="dim"))
            return
        text = Text(no_wrap=True, overflow="ellipsis")
        where = "typed" if str(source.path) == "<typed>" else str(source.path)
        text.append(f"{len(source.prompts)} prompts", style="bold")
        text.append(f" from {where}\n")
        for prompt in source.prompts[:PREVIEW_PROMPTS]:
            text.append(f"{prompt.line or '-':>5}  ", style="dim")
            text.append_text(one_line(prompt.text[:200]))
            text.append("\n")
        if len(source.prompts) > PREVIEW_PROMPTS:
            text.append(f"       … {len(source.prompts) - PREVIEW_PROMPTS} more\n", style="dim")
        warnings = source.warnings + self.long_warnings
        if warnings:
            text.append(f"{len(warnings)} warning(s)\n", style="bold yellow")
            for warning in warnings[:PREVIEW_WARNINGS]:
                text.append_text(one_line(f"  {warning}", style="yellow"))
                text.append("\n")
            if len(warnings) > PREVIEW_WARNINGS:
                text.append(f"  … {len(warnings) - PREVIEW_WARNINGS} more\n", style="yellow")
        preview.update(text)

    def check_lengths(self, model: str | None, n_ctx: int) -> None:
        """Warn about prompts too long for the context, counted with the model's tokenizer."""
        source = self.current_prompts()
        if source is not None and model is not None and source.prompts:
            self.count_tokens(source, model, n_ctx)

    @work(
        thread=True,
        exclusive=True,
        group="validate",
        exit_on_error=False,
        description="Counting prompt tokens",
    )
    def count_tokens(self, source: PromptFile, model: str, n_ctx: int) -> None:
        from tui_batch.backends.factory import length_check

        try:
            found = length_check(model, n_ctx).too_long(source.prompts)
        except TuiBatchError:
            return  # a model that cannot be read says so when the job starts
        warnings = [
            PromptWarning(
                prompt.line,
                f"too long for the context ({tokens} tokens with the chat template; "
                f"the context holds {n_ctx}): it will fail",
            )
            for prompt, tokens in found
        ]
        self.app.call_from_thread(self._long_prompts_found, source, warnings)

    def _long_prompts_found(self, source: PromptFile, warnings: list[PromptWarning]) -> None:
        if source is self.current_prompts():
            self.long_warnings = warnings
            self.show_preview()
