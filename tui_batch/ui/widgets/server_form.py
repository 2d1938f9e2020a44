"""The server half of job setup: endpoints, model name, key variable, limits, and a
"test connection" that lists each server's models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Vertical
from textual.widgets import Button, Input, Label, Select, Static

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.servers import (
    DEFAULT_KEY_ENV,
    SERVER_DEFAULTS,
    ServerCheck,
    ServerSettings,
    server_settings_from_text,
)
from tui_batch.core.settings import LIMITS, GenerationSettings
from tui_batch.core.structured.schema import AnswerSchema
from tui_batch.ui.text import literal, one_line

SERVER_NUMBERS = ("concurrency", "rpm", "tpm")
# How the prompts are sent: a request each, or in batches through the Batch API.
SEND_CHOICES = (
    ("Live requests", "live"),
    ("Batch API: about half the price, answered within 24 h", "batch"),
)


class ServerForm(Vertical):
    """Where a job on servers sends its requests. Text is checked by the core."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # What the job's answers must be, as job setup says now (the servers are asked
        # whether they enforce it).
        self.answer_schema: Callable[[], AnswerSchema | None] = lambda: None
        # The reasoning settings chosen (job setup's), to ask the servers about them.
        self.reasoning: Callable[[], GenerationSettings | None] = lambda: None

    def compose(self) -> ComposeResult:
        yield Label("Servers  [dim](URL[#N] each, separated by spaces)[/]")
        yield Input(placeholder="http://127.0.0.1:8000/v1", id="servers", compact=True)
        yield Label("Model  [dim](test the connection to list them)[/]")
        yield Select([], id="server-model", prompt="(not listed yet)", compact=True)
        yield Input(placeholder="…or the served model's name", id="server-model-name", compact=True)
        yield Label("API key variable  [dim](its name: the key is never stored)[/]")
        yield Input(DEFAULT_KEY_ENV, id="api-key-env", compact=True)
        yield Label("Send")
        yield Select(SEND_CHOICES, id="send", value="live", allow_blank=False, compact=True)
        with Grid(classes="numbers"):
            for key in SERVER_NUMBERS:
                yield Label(LIMITS[key].label)
                yield Input(placeholder=LIMITS[key].hint, id=key, restrict=r"[0-9]*", compact=True)
        yield Button("Test connection (f5)", id="test-connection", compact=True)
        yield Static(id="server-check")

    def on_mount(self) -> None:
        self.query_one("#concurrency", Input).value = str(SERVER_DEFAULTS["concurrency"])

    def server_settings(self) -> ServerSettings:
        """The typed servers and limits, checked; a TuiBatchError says what is wrong."""
        urls = self.query_one("#servers", Input).value.split()
        if not urls:
            raise TuiBatchError("No server: type its URL, like http://127.0.0.1:8000/v1")
        texts: dict[str, str | None] = {
            key: self.query_one(f"#{key}", Input).value for key in SERVER_NUMBERS
        }
        texts["api_key_env"] = self.query_one("#api-key-env", Input).value
        texts["batch_api"] = "on" if self.batch_api else "off"
        return server_settings_from_text(urls, texts)

    @property
    def batch_api(self) -> bool:
        """Whether the prompts go as batches through the servers' Batch API."""
        return self.query_one("#send", Select).value == "batch"

    def model_name(self) -> str | None:
        typed = self.query_one("#server-model-name", Input).value.strip()
        if typed:
            return typed
        value = self.query_one("#server-model", Select).value
        return None if value is Select.NULL else str(value)

    def restore(self, values: dict[str, str]) -> None:
        for key, selector in (("servers", "#servers"), ("api_key_env", "#api-key-env")):
            if values.get(key):
                self.query_one(selector, Input).value = values[key]
        for key in SERVER_NUMBERS:
            if values.get(key) is not None:
                self.query_one(f"#{key}", Input).value = str(values[key])
        if values.get("server_model"):
            self.query_one("#server-model-name", Input).value = values["server_model"]
        if values.get("send") in ("live", "batch"):
            self.query_one("#send", Select).value = values["send"]

    def remembered(self) -> dict[str, str]:
        values = {key: self.query_one(f"#{key}", Input).value for key in SERVER_NUMBERS}
        values["servers"] = self.query_one("#servers", Input).value.strip()
        values["api_key_env"] = self.query_one("#api-key-env", Input).value.strip()
        values["server_model"] = self.model_name() or ""
        values["send"] = "batch" if self.batch_api else "live"
        return values

    @on(Button.Pressed, "#test-connection")
    def test_connection(self) -> None:
        try:
            server = self.server_settings()
        except TuiBatchError as exc:
            self._show(literal(str(exc), style="bold red"))
            return
        self._show(Text("Asking each server for its models…", style="dim"))
        self._probe(server)

    @work(thread=True, exclusive=True, group="probe", exit_on_error=False, description="Test")
    def _probe(self, server: ServerSettings) -> None:
        from tui_batch.backends.factory import check_servers

        try:
            check = check_servers(server, None, self.answer_schema(), self.reasoning())
        except TuiBatchError as exc:
            self.app.call_from_thread(self._show, literal(str(exc), style="bold red"))
            return
        self.app.call_from_thread(self._listed, check)

    def check_then(
        self, server: ServerSettings, model: str, start: Callable[[ServerSettings], None]
    ) -> None:
        """Check every server answers and serves `model`, then call `start` with the
        servers as found (one that interrupts requests gets one at a time), on the UI
        thread: a job is made only then. A problem is shown, and nothing is made."""
        self._show(Text("Checking the servers…", style="dim"))
        self._check(server, model, start)

    @work(thread=True, exclusive=True, group="probe", exit_on_error=False, description="Check")
    def _check(
        self, server: ServerSettings, model: str, start: Callable[[ServerSettings], None]
    ) -> None:
        from tui_batch.backends.factory import check_servers

        try:
            check = check_servers(server, model, self.answer_schema(), self.reasoning())
        except TuiBatchError as exc:
            self.app.call_from_thread(self._refused, str(exc))
            return
        self.app.call_from_thread(self._checked, check, server, start)

    def _checked(
        self, check: ServerCheck, server: ServerSettings, start: Callable[[ServerSettings], None]
    ) -> None:
        text = Text("ok: every server answers", style="green")
        for warning in check.warnings():
            text.append_text(literal(f"\n{warning}", style="yellow"))
            self.app.notify(warning, title="Servers", severity="warning", timeout=15)
        self._show(text)
        try:
            start(check.applied_to(server))
        except TuiBatchError as exc:
            self._refused(str(exc))

    def _refused(self, message: str) -> None:
        self._show(literal(message, style="bold red"))
        self.app.notify(message, title="Cannot start", severity="error")

    def _listed(self, check: ServerCheck) -> None:
        served = check.models
        names = sorted({name for found in served.values() for name in found})
        select = self.query_one("#server-model", Select)
        # A served name is the server's text: shown as data, never as markup.
        select.set_options([(one_line(name), name) for name in names])
        if names:
            select.value = names[0]
        text = Text()
        for url, found in served.items():
            text.append("ok ", style="bold green")
            text.append_text(one_line(url))
            text.append(f"  {len(found)} model(s)" if found else "  lists no models", "dim")
            if check.enforced_form(url):
                text.append(f"  schema: enforced ({check.enforced_form(url)})", "dim")
            text.append("\n")
        for warning in check.warnings():
            text.append_text(literal(f"{warning}\n", style="yellow"))
        self._show(text)

    def _show(self, text: Text) -> None:
        self.query_one("#server-check", Static).update(text)
