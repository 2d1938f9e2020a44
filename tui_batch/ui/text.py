"""Prompts and responses are data: shown literally, never as markup or terminal codes.
The escaping is the core's (`core.text`), shared with every print of the CLI."""

from __future__ import annotations

from rich.text import Text

from tui_batch.core.compare import word_diff
from tui_batch.core.jobs import BatchResult, Prompt
from tui_batch.core.text import escape_controls


def literal(value: str | None, style: str = "") -> Text:
    """`value` as plain text: markup stays text, control characters become `\\x1b` etc."""
    return Text(escape_controls(value), style=style, no_wrap=False)


def one_line(value: str | None, style: str = "") -> Text:
    """Like `literal`, on one line: newlines and tabs shown as `⏎` and spaces."""
    flat = (value or "").replace("\r\n", "\n").replace("\n", " ⏎ ").replace("\t", " ")
    return Text(escape_controls(flat), style=style, no_wrap=True, overflow="ellipsis")


def token_cells(result: BatchResult) -> tuple[Text, Text]:
    """A result's input and output tokens; `-` where nobody counted them (a server that
    sends no usage), never 0."""
    tokens_in = str(result.tokens_input) if result.input_known else "-"
    tokens_out = str(result.tokens_output) if result.output_known else "-"
    return Text(tokens_in), Text(tokens_out)


def prompt_cell(
    prompt: Prompt, index: int, id_field: str | None = None, template: bool = True
) -> Text:
    """What tells a prompt apart in a table: its text, or for a `template` job (whose
    prompts all start with the same words) its record's id and fields, the id first."""
    if prompt.variables is None or not template:
        return one_line(prompt.text)
    fields = " · ".join(str(value) for name, value in prompt.variables.items() if name != id_field)
    cell = one_line(f"{prompt.custom_id or index}  ", style="bold")
    cell.append_text(one_line(fields))
    return cell


def diff_text(before: str, after: str) -> Text:
    """Two texts word by word: what only the first has struck out in red, what only the
    second has underlined in green."""
    text = Text()
    for op, run in word_diff(before, after):
        style = {"-": "red strike", "+": "green underline"}.get(op, "")
        text.append_text(literal(run, style=style))
    return text
