"""Job setup's reasoning settings, for models that think before they answer: whether they
do (auto: the model's own default), the thought's token budget, and gpt-oss's effort.
Their words, labels and limits are the table of settings' (core.setting_table)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Grid, Vertical
from textual.widgets import Input, Label, Select

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.setting_table import BY_NAME
from tui_batch.core.settings import GenerationSettings, settings_from_text
from tui_batch.ui.widgets.number_fields import number_grid

MODES = [(word, word) for word in BY_NAME["reasoning"].words]
# Blank: the model's own effort.
EFFORTS = [(w or "model's default", w or "default") for w in BY_NAME["reasoning_effort"].words]


class ReasoningForm(Vertical):
    """The three reasoning settings, as `RunSpec.from_values` takes them."""

    def compose(self) -> ComposeResult:
        yield Label("Models that think first")
        with Grid(classes="numbers"):
            yield Label(BY_NAME["reasoning"].label)
            yield Select(MODES, value="auto", allow_blank=False, id="reasoning", compact=True)
            yield Label("Effort")
            yield Select(
                EFFORTS, value="default", allow_blank=False, id="reasoning_effort", compact=True
            )
        yield from number_grid(("reasoning_budget",))

    def values(self) -> dict[str, Any]:
        """The settings as chosen (None: left at the default, not written)."""
        mode = str(self.query_one("#reasoning", Select).value)
        effort = str(self.query_one("#reasoning_effort", Select).value)
        budget = self.query_one("#reasoning_budget", Input).value.strip()
        return {
            "reasoning": None if mode == "auto" else mode,
            "reasoning_effort": None if effort == "default" else effort,
            "reasoning_budget": budget or None,
        }

    def settings(self) -> GenerationSettings | None:
        """The reasoning settings as chosen (None: a mistake, which starting says)."""
        try:
            given = {key: value for key, value in self.values().items() if value is not None}
            return settings_from_text(given)[0]
        except TuiBatchError:
            return None

    def restore(self, settings: GenerationSettings) -> None:
        self.query_one("#reasoning", Select).value = settings.reasoning
        self.query_one("#reasoning_effort", Select).value = settings.reasoning_effort or "default"
        budget = settings.reasoning_budget
        self.query_one("#reasoning_budget", Input).value = "" if budget is None else str(budget)
