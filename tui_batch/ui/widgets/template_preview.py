"""What the template tab's preview says: how many records render, the first problems,
the first prompts, and which records are too long for the local model's context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from tui_batch.backends.factory import length_check
from tui_batch.core.errors import TuiBatchError
from tui_batch.core.jobs import Prompt
from tui_batch.core.templates.template import Rendered, Validation
from tui_batch.ui.text import one_line

# The preview shows this many rendered prompts, each cut to this many lines.
PREVIEW_RECORDS = 3
PREVIEW_LINES = 6
# At most this many records that could be too long are counted with the tokenizer, and
# this many of those that are named.
MAX_LENGTH_CHECKS = 2000
SHOWN_LONG = 10


@dataclass(slots=True)
class LongPrompts:
    """Which of the prompts seen may not fit a local model's context: the candidates
    (a cheap bound, at most MAX_LENGTH_CHECKS) are kept as they pass and counted at the
    end with the tokenizer, the chat template and the system prompt, as the run counts
    them. No `model` (a job on servers): nothing is checked."""

    model: str | None = None
    n_ctx: int = 0
    system_prompt: str | None = None
    maybe: list[Prompt] = field(default_factory=list)
    # Set once a model that cannot be read is found: the check is left out (the job
    # says so when it starts).
    unreadable: bool = False
    _check: Any = None

    def consider(self, prompt: Prompt) -> None:
        if not self.model or self.unreadable or len(self.maybe) >= MAX_LENGTH_CHECKS:
            return
        try:
            if self._check is None:
                self._check = length_check(self.model, self.n_ctx, self.system_prompt)
            if self._check.may_not_fit(prompt):
                self.maybe.append(prompt)
        except TuiBatchError:
            self.unreadable = True

    def count(self) -> list[tuple[Prompt, int]]:
        """The prompts kept that do not fit, with their token counts."""
        if self._check is None or not self.maybe:
            return []
        try:
            return self._check.too_long(self.maybe)
        except TuiBatchError:
            return []


@dataclass(slots=True)
class Preview:
    """The records seen so far: counted, their problems and the first prompts kept,
    and (`long_prompts`, for a job on a local model) those too long for its context."""

    id_field: str | None = None
    long_prompts: LongPrompts = field(default_factory=LongPrompts)
    found: Validation = field(default_factory=Validation)
    shown: list[Rendered] = field(default_factory=list)
    long: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.found.records

    def add(self, item: Rendered | str) -> None:
        rendered = self.found.add(item)
        if rendered is None:
            return
        if self.id_field is not None and self.id_field not in rendered.record:
            self.found.problem(f"record {rendered.number}: no id column {self.id_field!r}")
            return
        if len(self.shown) < PREVIEW_RECORDS:
            self.shown.append(rendered)
        self.long_prompts.consider(
            Prompt(rendered.prompt, system=rendered.system, line=rendered.number)
        )

    def count_tokens(self) -> None:
        """Which of the records kept do not fit the context."""
        self.long = [prompt.line or 0 for prompt, _ in self.long_prompts.count()]

    def report(self, done: bool) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        found = self.found
        status = f"{found.records:,} records" + ("" if done else " so far…")
        if found.failed:
            text.append(f"✗ {found.failed:,} of {status} cannot be rendered\n", style="bold red")
            for problem in found.problems:
                text.append_text(one_line(f"  {problem}", style="red"))
                text.append("\n")
            if found.more:
                text.append(f"  … {found.more:,} more\n", style="red")
        else:
            text.append(f"✓ {status}", style="bold green")
            text.append(", all render\n" if done else "\n")
        if found.empty:
            text.append(f"{found.empty:,} render empty and will be skipped\n", style="yellow")
        if self.long:
            numbers = ", ".join(map(str, self.long[:SHOWN_LONG]))
            more = ", …" if len(self.long) > SHOWN_LONG else ""
            text.append(
                f"{len(self.long):,} do not fit the context ({self.long_prompts.n_ctx} tokens, the chat "
                f"template included) and will fail: records {numbers}{more}\n",
                style="yellow",
            )
        for item in self.shown:
            text.append("\n")
            name = item.record.get(self.id_field) if self.id_field else None
            text.append(f"record {item.number}", style="bold")
            text.append(f" (id {name})\n" if name is not None else "\n", style="dim")
            if item.system:
                text.append_text(one_line(f"  system: {item.system}", style="italic"))
                text.append("\n")
            lines = item.prompt.strip().splitlines()
            for line in lines[:PREVIEW_LINES]:
                text.append_text(one_line(f"  {line}"))
                text.append("\n")
            if len(lines) > PREVIEW_LINES:
                text.append(f"  … {len(lines) - PREVIEW_LINES} more lines\n", style="dim")
        return text
