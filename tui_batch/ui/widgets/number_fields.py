"""Settings typed as numbers in job setup: a grid of labelled inputs, with the labels,
hints and limits of the table of settings (core.setting_table) and their defaults."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid
from textual.widgets import Input, Label

from tui_batch.core.settings import LIMITS, GenerationSettings, JobOptions

DEFAULT_THRESHOLD = 3


def default_text(key: str) -> str:
    """What a field shows before a person types: the setting's default, or blank."""
    if key == "threshold":
        return str(DEFAULT_THRESHOLD)
    for defaults in (GenerationSettings(), JobOptions()):
        value = getattr(defaults, key, None)
        if value is not None:
            return f"{value:g}" if isinstance(value, float) else str(value)
    return ""


def number_grid(keys: tuple[str, ...]) -> ComposeResult:
    """A label and an input (id: the setting's name) for each setting."""
    with Grid(classes="numbers"):
        for key in keys:
            yield Label(LIMITS[key].label)
            yield Input(
                default_text(key),
                placeholder=LIMITS[key].hint,
                id=key,
                restrict=r"-?[0-9.]*",
                compact=True,
            )
