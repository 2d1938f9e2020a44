"""The local half of job setup: a GGUF model found on this machine (or a path to one),
how llama.cpp runs it, and whether answers must be batch-invariant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Checkbox, Input, Label, Select, Static

from tui_batch.core.paths import is_file
from tui_batch.ui.text import one_line
from tui_batch.ui.widgets.number_fields import default_text, number_grid
from tui_batch.ui.widgets.tick_box import TickBox

# Only for a local model (the server form has its own).
LOCAL_FIELDS = ("n_ctx", "n_threads", "n_gpu_layers", "parallel")


class LocalForm(Vertical):
    """Which model and how to run it. Text is checked by the core, with the rest."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_paths: list[str] = []

    def compose(self) -> ComposeResult:
        yield Label("Model")
        yield Select([], id="model", prompt="(no models found)", compact=True)
        yield Input(placeholder="…or a path to a .gguf file", id="model-path", compact=True)
        yield Static(id="model-help")
        yield from number_grid(LOCAL_FIELDS)
        invariant = TickBox("Batch-invariant answers (slower)", id="batch_invariant", compact=True)
        invariant.tooltip = (
            "Greedy answers identical, token for token, to one prompt at a time "
            "(prompts prefilled alone, small decode groups). Off: full batches, "
            "faster; answers may differ after some tokens."
        )
        yield invariant

    def fill_models(self) -> None:
        """List the models found on this machine, or say where they are looked for."""
        from tui_batch.models.catalog import discover_models, no_models_help

        select = self.query_one("#model", Select)
        options = []
        for model in discover_models():
            info = model.gguf
            detail = (
                (
                    f"{model.size_bytes / 2**20:.0f} MiB · {info.quantisation or '?'} · "
                    f"ctx {info.context_length or '?'}"
                )
                if info
                else "unreadable"
            )
            # A file name is data: shown literally, never read as markup.
            options.append((one_line(f"{model.id}  ({detail})"), str(model.path)))
        select.set_options(options)
        self.model_paths = [value for _, value in options]
        if options:
            select.value = options[0][1]
        else:
            select.disabled = True
            self.query_one("#model-help", Static).update(
                Text("\n".join(no_models_help()), style="yellow")
            )

    def model_path(self) -> str | None:
        """The path typed, else the model chosen, else None."""
        typed = self.query_one("#model-path", Input).value.strip()
        if typed:
            return str(Path(typed).expanduser())
        value = self.query_one("#model", Select).value
        return None if value is Select.NULL else str(value)

    def texts(self) -> dict[str, str]:
        """The local settings as typed, for `settings_from_text`."""
        texts = {key: self.query_one(f"#{key}", Input).value for key in LOCAL_FIELDS}
        texts["batch_invariant"] = "on" if self.query_one(Checkbox).value else "off"
        return texts

    def restore(self, setup: dict[str, Any]) -> None:
        for key in LOCAL_FIELDS:
            value = setup.get(key)
            text = default_text(key) if value is None else str(value)
            self.query_one(f"#{key}", Input).value = text
        self.query_one(Checkbox).value = setup.get("batch_invariant") is True
        model = setup.get("model")
        if model and model in self.model_paths:
            self.query_one("#model", Select).value = model
        elif model and is_file(model):
            self.query_one("#model-path", Input).value = model

    def remembered(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            key: self.query_one(f"#{key}", Input).value for key in LOCAL_FIELDS
        }
        values.update(batch_invariant=self.query_one(Checkbox).value, model=self.model_path())
        return values
