"""Job setup's form as a `RunSpec`, and back: what starting a job, ctrl+s and the
remembered setup take from the form, and what opening a job file fills in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.screen import Screen
from textual.widgets import Input, Select, Static, TabbedContent

from tui_batch.core.errors import ModelError, TuiBatchError
from tui_batch.core.export import check_output_path
from tui_batch.core.jobfile import load_job_file, load_job_matrix, output_outside, save_job_file
from tui_batch.core.matrix import cross
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.setting_table import SETTINGS
from tui_batch.core.settings import parse_number
from tui_batch.ui.screens.modals import ConfirmScreen, SaveJobScreen
from tui_batch.ui.text import literal
from tui_batch.ui.widgets.answer_form import AnswerForm
from tui_batch.ui.widgets.local_form import LOCAL_FIELDS, LocalForm
from tui_batch.ui.widgets.number_fields import default_text
from tui_batch.ui.widgets.path_input import display_path
from tui_batch.ui.widgets.prompts_form import PromptsForm
from tui_batch.ui.widgets.reasoning_form import ReasoningForm
from tui_batch.ui.widgets.server_form import SERVER_NUMBERS, ServerForm
from tui_batch.ui.widgets.template_form import TemplateForm

# The settings typed as numbers in job setup, in this order (the local ones are LocalForm's).
COMMON_FIELDS = ("max_tokens", "temperature", "seed", "threshold", "retries", "checkpoint_every")
# What a million tokens cost, for the stats' cost (blank: not given).
PRICE_FIELDS = ("price_in", "price_out")
# How answers are scored against a column of expected ones (with the text fields expect
# and score), and how many times each prompt runs.
SCORE_FIELDS = ("tolerance", "repeats")
# The settings job setup has a field for: the numbers typed above and in the local and
# server halves, and the ones `form_values` reads by name.
FORM_FIELDS = frozenset(
    {
        *COMMON_FIELDS,
        *PRICE_FIELDS,
        *SCORE_FIELDS,
        *LOCAL_FIELDS,
        *SERVER_NUMBERS,
        *("prompts", "template", "template_text", "data", "id_field", "model"),
        *("batch_invariant", "server", "api_key_env", "system_prompt", "schema", "choices"),
        "batch_api",
        *("error_strategy", "cache", "expect", "score"),
        *("reasoning", "reasoning_budget", "reasoning_effort"),
    }
)
# Every other setting a job file may hold, derived from the table so that none is ever
# dropped: job setup keeps it as the job file gave it, lists it under the form, and uses
# and saves it again.
EXTRA_KEYS = tuple(s.name for s in SETTINGS if s.name not in FORM_FIELDS)


def form_values(screen: Screen[Any], extras: dict[str, Any]) -> dict[str, Any]:
    """Everything job setup's form says, with the `extras` a job file gave, as a job
    file's values (text where typed: `RunSpec.from_values` checks it as a flag's)."""
    values: dict[str, Any] = dict(extras)
    if screen.query_one("#input-tabs", TabbedContent).active == "template-tab":
        values.update(screen.query_one(TemplateForm).values())
    elif path := screen.query_one(PromptsForm).path_text:
        values["prompts"] = Path(path).expanduser()
    for key in (*COMMON_FIELDS, *PRICE_FIELDS, *SCORE_FIELDS, "expect", "score"):
        if key != "threshold":
            values[key] = screen.query_one(f"#{key}", Input).value.strip() or None
    strategy = str(screen.query_one("#strategy", Select).value)
    if strategy == "threshold":
        threshold = parse_number("threshold", screen.query_one("#threshold", Input).value)
        strategy = f"threshold:{threshold}"
    values["error_strategy"] = strategy
    cache = str(screen.query_one("#cache", Select).value)
    values["cache"] = None if cache == "off" else cache  # off: the default, not written
    values["system_prompt"] = screen.query_one("#system", Input).value.strip() or None
    values.update(screen.query_one(AnswerForm).values())
    values.update(screen.query_one(ReasoningForm).values())
    if screen.query_one("#run-on", Select).value == "server":
        form = screen.query_one(ServerForm)
        kept = form.remembered()
        if not kept["servers"].split():
            raise TuiBatchError("No server: type its URL, like http://127.0.0.1:8000/v1")
        values["server"] = kept["servers"].split()
        values["api_key_env"] = kept["api_key_env"] or None
        values.update({key: kept[key] or None for key in SERVER_NUMBERS})
        values["batch_api"] = True if form.batch_api else None  # off: the default, not written
        values["model"] = form.model_name()
    else:
        local = screen.query_one(LocalForm)
        values.update({key: text or None for key, text in local.texts().items()})
        values["model"] = _model_name(local.model_path(), local)
    return values


def form_spec(screen: Screen[Any], extras: dict[str, Any]) -> RunSpec:
    """The form as a spec, checked by the core as the CLI's flags are; a TuiBatchError
    says what is wrong."""
    return RunSpec.from_values(form_values(screen, extras))


def _model_name(path: str | None, local: LocalForm) -> str | None:
    """A model found on this machine is saved by its id (portable); a typed one by path."""
    from tui_batch.models.catalog import model_id_for

    if path is None:
        return None
    return model_id_for(Path(path)) if path in local.model_paths else path


def _number_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def fill_form(screen: Screen[Any], spec: RunSpec) -> None:
    """Fill job setup's form from a spec (a job file's, the remembered one). The input
    tab is filled only where the spec names an input."""
    generation, options = spec.generation, spec.options
    if spec.server is not None:
        server = spec.server
        screen.query_one("#run-on", Select).value = "server"
        restore: dict[str, Any] = {
            key: "" if getattr(server, key) is None else str(getattr(server, key))
            for key in SERVER_NUMBERS
        }
        restore.update(
            servers=" ".join(str(endpoint) for endpoint in server.endpoints),
            api_key_env=server.api_key_env,
            server_model=spec.model,
            send="batch" if server.batch_api else "live",
        )
        screen.query_one(ServerForm).restore(restore)
    else:
        screen.query_one("#run-on", Select).value = "local"
        local: dict[str, Any] = {key: getattr(generation, key) for key in LOCAL_FIELDS}
        local["batch_invariant"] = generation.batch_invariant
        local["model"] = _model_path(spec.model) if spec.model else None
        screen.query_one(LocalForm).restore(local)
        if spec.model and screen.query_one(LocalForm).model_path() != local["model"]:
            screen.notify(f"Model not found: {spec.model}; choose one", severity="warning")
    typed = {
        "max_tokens": generation.max_tokens,
        "temperature": generation.temperature,
        "seed": generation.seed,
        "retries": options.retries,
        "checkpoint_every": options.checkpoint_every,
        "price_in": spec.prices.input if spec.prices else None,
        "price_out": spec.prices.output if spec.prices else None,
        "repeats": options.repeats,
        "tolerance": spec.scoring.tolerance if spec.scoring and spec.scoring.tolerance else None,
    }
    for key, value in typed.items():
        text = default_text(key) if value is None else _number_text(value)
        screen.query_one(f"#{key}", Input).value = text
    strategy = options.error_strategy
    if strategy.startswith("threshold:"):
        screen.query_one("#threshold", Input).value = strategy.split(":", 1)[1]
        strategy = "threshold"
    screen.query_one("#strategy", Select).value = strategy
    screen.query_one("#cache", Select).value = options.cache
    screen.query_one("#system", Input).value = generation.system_prompt or ""
    scoring = spec.scoring
    screen.query_one("#expect", Input).value = scoring.expect if scoring else ""
    screen.query_one("#score", Input).value = scoring.method_text if scoring else ""
    screen.query_one(AnswerForm).restore(generation.schema)
    screen.query_one(ReasoningForm).restore(generation)
    if spec.prompts is not None:
        screen.query_one("#input-tabs", TabbedContent).active = "prompts-tab"
        screen.query_one(PromptsForm).set_path(display_path(spec.prompts))
    elif spec.uses_template or spec.data is not None:
        screen.query_one("#input-tabs", TabbedContent).active = "template-tab"
        shown = {
            "template": display_path(spec.template) if spec.template else None,
            "template_text": spec.template_text,
            "data": display_path(spec.data) if spec.data else None,
            "id_field": spec.id_field,
        }
        screen.query_one(TemplateForm).restore(shown)


def extras_of(spec: RunSpec) -> dict[str, Any]:
    """The settings of `spec` given or not at their defaults that job setup has no
    field for."""
    return {key: value for key, value in spec.to_values().items() if key in EXTRA_KEYS}


def _model_path(model: str) -> str:
    """A job file's model, an id or a path, as the path job setup shows."""
    from tui_batch.models.catalog import resolve_model

    try:
        return str(resolve_model(model).path)
    except ModelError:
        return model


class JobFileScreen(Screen[None]):
    """A screen whose form loads from and saves to job files (job setup)."""

    def __init__(self) -> None:
        super().__init__()
        # Settings a loaded job file gave that the form has no field for (top_p, stop,
        # the output file...): kept, used when the job starts, and saved again.
        self.extras: dict[str, Any] = {}
        self.job_file: Path | None = None
        # The job file's [matrix], kept as it was and saved again with the form.
        self.matrix: dict[str, list[Any]] = {}
        # A job file's output outside its folder that the person agreed to.
        self._confirmed_output: Path | None = None

    def check_form(self) -> RunSpec:
        """The form's spec; a TuiBatchError if its settings would not run."""
        raise NotImplementedError

    def _inputs(self) -> list[Path]:
        """Every file the job would be made from: no results file may replace one."""
        files = [self.job_file] if self.job_file is not None else []
        if self.query_one("#input-tabs", TabbedContent).active == "template-tab":
            form = self.query_one(TemplateForm)
            files += [path for path in (form.data_path, form.template_path) if path]
        elif self.query_one(PromptsForm).path_text:
            files.append(Path(self.query_one(PromptsForm).path_text).expanduser())
        return files

    def _output_allowed(self) -> bool:
        """A results file may not replace an input (a TuiBatchError says so), and a job
        file's output outside its folder is written there only once the person says
        yes (a shared job file could name ~/.bashrc). False while the question is open."""
        out = self.extras.get("out")
        if out is None:
            return True
        check_output_path(out, protected=[*self._inputs(), self.app.processor.checkpoint_dir])
        job_file = self.job_file
        if job_file is None or self._confirmed_output == out or not output_outside(job_file, out):
            return True

        def answer(yes: bool | None) -> None:
            if yes:
                self._confirmed_output = out
                self.action_start()

        question = (
            f"The job file {job_file} writes its results to {out}, outside its folder. "
            "Write them there?"
        )
        self.app.push_screen(ConfirmScreen(question, yes="write there", no="don't start"), answer)
        return False

    def action_start(self) -> None:
        """Start the job (job setup's)."""
        raise NotImplementedError

    def load_job(self, path: Path) -> None:
        """Fill the whole form from a job file; a mistake in it is said, nothing changed."""
        try:
            spec = RunSpec.from_values(load_job_file(path))
            matrix = load_job_matrix(path)
            fill_form(self, spec)
        except TuiBatchError as exc:
            self.notify(str(exc), title="Job file", severity="error")
            return
        self.extras = extras_of(spec)
        self.job_file, self.matrix = path, matrix
        self._show_extras()
        if matrix:  # the form holds what the group's jobs share
            self.notify(
                f"Loaded {path}: its [matrix] ({', '.join(matrix)}) makes a group of "
                f"{len(cross(matrix))} jobs: ctrl+r runs them at once (as tui-batch run "
                f"{path}). The form holds the settings they share.",
                title="Job file",
                timeout=20,
            )
        else:
            self.notify(f"Loaded {path}", title="Job file")

    def _show_extras(self) -> None:
        shown = ", ".join(f"{key} = {value!r:.40}" for key, value in self.extras.items())
        self.query_one("#job-extras", Static).update(
            literal(f"Also from the job file: {shown}", style="dim") if shown else ""
        )

    def action_save_job(self) -> None:
        default = self.job_file or Path.cwd() / "job.toml"
        self.app.push_screen(SaveJobScreen(default), self._save_job)

    def _save_job(self, path: Path | None) -> None:
        if path is None:
            return
        try:
            spec = self.check_form()  # what is saved is what would run
            if spec.prompts is None and not spec.uses_template:
                raise TuiBatchError(
                    "A job file needs a prompts file or a template: typed prompts are not saved"
                )
            saved = save_job_file(path, spec.to_values(), self.matrix)
        except TuiBatchError as exc:
            self.notify(str(exc), title="Cannot save", severity="error")
            return
        self.job_file = saved
        self.notify(f"Saved {saved}: run it with tui-batch run {saved}", title="Job file")
