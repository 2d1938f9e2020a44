"""Small modal questions: confirm, quit, resume options, export target, file picker, one
result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Checkbox, DirectoryTree, Footer, Input, Label, Select, Static

from tui_batch.core.export import EXPORT_FORMATS
from tui_batch.core.jobfile import JOB_FILE_SUFFIX
from tui_batch.core.jobs import Attempt, BatchResult
from tui_batch.core.prompts import SUPPORTED_EXTENSIONS
from tui_batch.core.scoring.methods import Scoring
from tui_batch.core.structured.schema import AnswerSchema
from tui_batch.core.templates.records import DATA_FORMATS
from tui_batch.ui.text import diff_text, literal, one_line, token_cells
from tui_batch.ui.widgets.tick_box import TickBox

AnswerT = TypeVar("AnswerT")


class QuestionScreen(ModalScreen[AnswerT]):
    """A question answered by one key: its text, a hint line naming the keys, and
    bindings (in subclasses) that call `answer(...)`."""

    HINT = ""

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question
        self.hint: str | Text = self.HINT

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(literal(self.question), classes="question")
            yield Static(self.hint, classes="hint")

    def action_answer(self, answer: AnswerT) -> None:
        self.dismiss(answer)


class ConfirmScreen(QuestionScreen[bool]):
    """A yes/no question: y answers yes, n or Escape no. The hint says what each does
    ("y stop the job", "n / Esc keep it running"), never just "cancel"."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "yes", no: str = "no") -> None:
        super().__init__(question)
        self.hint = Text.assemble(("y", "bold"), f" {yes}   ", ("n", "bold"), " or ")
        self.hint.append_text(Text.assemble(("Esc", "bold"), f" {no}"))


class ResumeScreen(QuestionScreen[bool | None]):
    """Resume a job: also run its failed prompts again? Escape does not resume."""

    BINDINGS = [
        Binding("y", "answer(True)", "Retry failed too"),
        Binding("n", "answer(False)", "Only unfinished"),
        Binding("escape", "answer(None)", "Cancel"),
    ]
    HINT = "[b]y[/] retry failed too   [b]n[/] only unfinished   [b]Esc[/] cancel"

    def __init__(self, job_id: str, failed: int, question: str | None = None) -> None:
        super().__init__(
            question or f"Resume job {job_id}. Run its {failed} failed prompt(s) again too?"
        )


class QuitScreen(QuestionScreen[str | None]):
    """Quit while jobs run, asked once for all: stop them (saved, resumable) and quit,
    quit when they finish, or stay. Escape stays."""

    BINDINGS = [
        Binding("s", "answer('stop')", "Stop and quit"),
        Binding("w", "answer('wait')", "Quit when finished"),
        Binding("escape,n", "answer(None)", "Keep going"),
    ]

    def __init__(self, jobs: list[str]) -> None:
        if len(jobs) == 1:
            question = (
                f"Job {jobs[0]} is running. Stop it and quit? Finished results are saved, "
                f"and tui-batch resume {jobs[0]} goes on from there."
            )
            it, finishes = "the job", "it finishes"
        else:
            named = ", ".join(jobs[:4]) + (f" and {len(jobs) - 4} more" if len(jobs) > 4 else "")
            question = (
                f"{len(jobs)} jobs are running ({named}). Stop them all and quit? Finished "
                "results are saved, and each resumes from Checkpoints or tui-batch resume."
            )
            it, finishes = "them all", "they all finish"
        super().__init__(question)
        self.hint = Text.assemble(
            ("s", "bold"), f" stop {it} and quit   ", ("w", "bold"), f" quit when {finishes}   "
        )
        self.hint.append_text(Text.assemble(("Esc", "bold"), " keep going"))


class ExportScreen(ModalScreen[tuple[str, Path, bool] | None]):
    """Where and how to export: a format and a path; from a filtered view, whether only
    the results it shows. Enter exports, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, job_id: str, default_dir: Path, shown: tuple[list[int], str] | None = None
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.default_dir = default_dir
        self.shown = shown

    def compose(self) -> ComposeResult:
        with Grid(classes="dialog form"):
            yield Label("Format")
            yield Select(
                [(f, f) for f in EXPORT_FORMATS], value="json", allow_blank=False, id="format"
            )
            yield Label("Path")
            yield Input(str(self.default_dir / f"batch_{self.job_id}.json"), id="path")
            if self.shown is not None:
                indices, how = self.shown
                only = TickBox(
                    one_line(f"only the {len(indices)} results shown ({how})"),
                    value=True,
                    id="only-shown",
                    compact=True,
                )
                yield Label("Which")
                yield only
            yield Static("[b]Enter[/] export   [b]Esc[/] cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    @on(Select.Changed, "#format")
    def _format_changed(self, event: Select.Changed) -> None:
        path_input = self.query_one("#path", Input)
        path = Path(path_input.value)
        if path.suffix.lstrip(".") in EXPORT_FORMATS:
            path_input.value = str(path.with_suffix(f".{event.value}"))

    @on(Input.Submitted, "#path")
    def _submit(self) -> None:
        value = self.query_one("#path", Input).value.strip()
        if not value:
            self.notify("Give a path to export to.", severity="error")
            return
        only = self.shown is not None and self.query_one("#only-shown", Checkbox).value
        self.dismiss((str(self.query_one("#format", Select).value), Path(value).expanduser(), only))

    def action_cancel(self) -> None:
        self.dismiss(None)


class SaveJobScreen(ModalScreen[Path | None]):
    """Where to save the job file. Enter saves, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: Path) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Grid(classes="dialog form"):
            yield Label("Job file")
            yield Input(str(self.default), id="job-path")
            yield Static(
                "[b]Enter[/] save (a file there is replaced)   [b]Esc[/] cancel", classes="hint"
            )

    def on_mount(self) -> None:
        self.query_one("#job-path", Input).focus()

    @on(Input.Submitted, "#job-path")
    def _submit(self) -> None:
        value = self.query_one("#job-path", Input).value.strip()
        if not value:
            self.notify("Give a path for the job file.", severity="error")
            return
        self.dismiss(Path(value).expanduser())

    def action_cancel(self) -> None:
        self.dismiss(None)


class PromptFileTree(DirectoryTree):
    """Folders and the files of the kinds asked for only."""

    def __init__(self, path: Path, extensions: tuple[str, ...]) -> None:
        self.extensions = extensions
        super().__init__(path)

    def filter_paths(self, paths):
        return [
            p
            for p in paths
            if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in self.extensions)
        ]


class FileBrowserScreen(ModalScreen[Path | None]):
    """Pick a prompts file (or, for a template, a data file) or a job file: arrows to
    move, Enter to open a folder or pick a file, backspace to go up a folder."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("backspace", "up", "Up a folder"),
    ]

    def __init__(self, start: Path, data: bool = False) -> None:
        super().__init__()
        self.start = start
        self.extensions = (*(DATA_FORMATS if data else SUPPORTED_EXTENSIONS), JOB_FILE_SUFFIX)
        self.kind = "data file" if data else "prompts file"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog browser"):
            yield Static(Text(f"Pick a {self.kind} or a job file ({', '.join(self.extensions)})"))
            yield Static(one_line(str(self.start), style="bold"), id="browser-folder")
            yield PromptFileTree(self.start, self.extensions)
            yield Footer()

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(event.path)

    def action_up(self) -> None:
        tree = self.query_one(PromptFileTree)
        folder = Path(tree.path).resolve()
        if folder.parent != folder:
            tree.path = folder.parent
            self.query_one("#browser-folder", Static).update(
                one_line(str(folder.parent), style="bold")
            )

    def action_cancel(self) -> None:
        self.dismiss(None)


def attempt_line(number: int, attempt: Attempt) -> Text:
    """One request sent for a prompt: when, where, what came back, how long."""
    ok = attempt.error is None
    line = Text(f"{number:>3}. ", style="dim")
    line.append(f"{attempt.status or '---'}", style="green" if ok else "bold red")
    line.append(f"  {attempt.latency:.2f}s", style="")
    if attempt.ttft is not None:
        line.append(f"  first token {attempt.ttft:.2f}s", style="dim")
    if ok:
        line.append(f"  {attempt.tokens_input} in / {attempt.tokens_output} out", style="dim")
    if attempt.retry_after is not None:
        line.append(f"  retry-after {attempt.retry_after:g}s", style="yellow")
    line.append("  ")
    line.append_text(one_line(attempt.endpoint, style="dim"))
    if attempt.started_at:
        line.append(f"  {attempt.started_at}", style="dim")
    if attempt.error:
        line.append("  ")
        line.append_text(one_line(attempt.error, style="yellow" if attempt.answer else "red"))
    if attempt.answer is not None:
        line.append("\n       answer ", style="dim")
        line.append_text(one_line(attempt.answer[:200]))
    return line


def status_text(result: BatchResult) -> Text:
    """ok, failed (an error), or invalid (an answer that broke the job's schema); with
    a score, right or wrong."""
    if result.right is not None and not result.invalid:
        return Text("right", style="bold green") if result.right else Text("wrong", style="red")
    if result.success:
        return Text("ok", style="green")
    if result.invalid:
        return Text("invalid", style="bold yellow")
    return Text("failed", style="bold red")


def output_lines(value: Any) -> Text:
    """A structured answer's value: each field on its line (nested ones as JSON)."""
    text = Text()
    if not isinstance(value, dict):
        text.append_text(literal(value if isinstance(value, str) else json.dumps(value)))
        return text
    for name, field_value in value.items():
        text.append_text(one_line(str(name), style="bold cyan"))
        text.append("  ")
        shown = field_value if isinstance(field_value, str) else json.dumps(field_value)
        text.append_text(literal(shown))
        text.append("\n")
    text.rstrip()
    return text


def result_details(
    result: BatchResult,
    scoring: Scoring | None = None,
    schema: AnswerSchema | None = None,
    thought_open: bool = True,
) -> Text:
    """Everything about one result, as literal text; with `scoring`, its expected
    answer beside what was compared with it, word by word; a thinking model's thought
    under the answer, dimmed (folded to its first line unless `thought_open`)."""
    status = status_text(result)
    status.stylize("bold")
    tokens_in, tokens_out = token_cells(result)
    text = Text.assemble(
        Text(f"Prompt {result.prompt_index} (", style="bold"),
        one_line(result.custom_id or "-", style="bold"),
        Text(")  ", style="bold"),
        status,
        f"  attempts {result.attempts}  tokens {tokens_in} in / {tokens_out} out  "
        f"{result.duration:.2f}s",
    )
    if result.queue_wait is not None:
        text.append(f" (after {result.queue_wait:.2f}s waiting)", style="dim")
    text.append("  finish ")
    text.append_text(one_line(result.finish_reason or "-"))
    text.append("\n")
    if result.token_counts is not None:
        how = "counted one streamed chunk a token" if result.output_known else "not counted"
        text.append(f"The server sent no token counts: output {how}, input unknown\n", "dim")
    if result.empty:
        text.append("The answer is empty (the model said nothing)\n", style="yellow")
    if result.cached_from is not None:
        text.append("Served from the answer cache: the answer job ", style="cyan")
        text.append_text(one_line(result.cached_from, style="bold cyan"))
        text.append(" got (no request made here)\n", style="cyan")
    if result.endpoint:
        text.append("Server ", style="dim")
        text.append_text(literal(result.endpoint))
        text.append("\n")
    if result.error_message:
        if result.invalid:
            text.append("\nInvalid: the answer breaks the schema\n", style="bold yellow")
        else:
            text.append("\nError\n", style="bold red")
        text.append_text(literal(result.error_message))
        text.append("\n")
    if result.output is not None:
        text.append("\nAnswer\n", style="bold")
        text.append_text(output_lines(result.output))
        text.append("\n")
    if scoring is not None and result.expected is not None:
        text.append_text(expected_lines(result, scoring, schema))
    if result.attempt_log:
        text.append("\nAttempts\n", style="bold")
        for number, attempt in enumerate(result.attempt_log, 1):
            text.append_text(attempt_line(number, attempt))
            text.append("\n")
    text.append("\nPrompt\n", style="bold")
    text.append_text(literal(result.prompt))
    text.append("\n\nResponse\n", style="bold")
    text.append_text(literal(result.response_text))
    if result.reasoning is not None:
        text.append_text(thought_lines(result, thought_open))
    return text


def thought_lines(result: BatchResult, open: bool) -> Text:
    """The thought the answer came with, dimmed: whole, or its first line (folded)."""
    thought = result.reasoning or ""
    tokens = result.reasoning_tokens
    counted = f", {tokens:,} tokens" if tokens is not None else ""
    text = Text(f"\n\nThought{counted}", style="bold dim")
    if not thought.strip():
        text.append("\n(empty)", style="dim italic")
        return text
    first, _, rest = thought.strip().partition("\n")
    if open or not rest and len(first) <= 100:
        text.append("\n")
        text.append_text(literal(thought.strip(), style="dim"))
        return text
    text.append("  (h: open)\n", style="dim")
    text.append_text(literal(first[:100] + " …", style="dim"))
    return text


def expected_lines(result: BatchResult, scoring: Scoring, schema: AnswerSchema | None) -> Text:
    """The expected answer, the score, and the word diff from it to what was compared."""
    expected = expected_text(result.expected)
    compared = scoring.compared(result.response_text, result.output, schema)
    text = Text("\nExpected", style="bold")
    text.append(f"  ({scoring.method_text}", style="dim")
    if result.score is not None:
        text.append(f", score {result.score:g}", style="dim")
    text.append(")\n", style="dim")
    text.append_text(literal(expected))
    if result.right is False and compared:
        text.append("\nWord diff (expected → answer)\n", style="bold")
        text.append_text(diff_text(expected, compared))
    text.append("\n")
    return text


class NoticeScreen(QuestionScreen[None]):
    """Something to read (a dry run's figures): Escape or Enter closes it."""

    BINDINGS = [
        Binding("escape", "answer(None)", "Close"),
        Binding("enter", "answer(None)", "Close"),
    ]
    HINT = "Esc close"


def expected_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class ResultScreen(ModalScreen[None]):
    """One result in full: prompt, response, error, tokens, duration and attempts."""

    BINDINGS = [
        Binding("escape", "dismiss", "Back"),
        Binding("c", "copy", "Copy response"),
    ]

    def __init__(
        self,
        result: BatchResult,
        scoring: Scoring | None = None,
        schema: AnswerSchema | None = None,
    ) -> None:
        super().__init__()
        self.result = result
        self.scoring, self.schema = scoring, schema

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog detail"):
            # The same details as the results' pane: the expected answer and score too.
            yield Static(result_details(self.result, self.scoring, self.schema))
        yield Footer()

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.result.response_text)
        self.notify("Response copied to the clipboard.")
