"""One run's settings, typed: where its prompts come from, the model or the servers, how
it generates, how the engine runs it, where the results go and what tokens cost.

Every way to start a job makes one: a job file (`core.jobfile` reads it into values),
the command line (its flags laid over a job file's values), job setup's form. Values
come in keyed by setting name (`core.setting_table`), as text (a flag, a field) or typed
(a job file); `RunSpec.from_values` converts and checks them once, and `to_values` gives
them back as a job file holds them. `BatchProcessor.create_job(..., spec=...)` makes the
job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tui_batch.core.budget import Budget
from tui_batch.core.errors import SettingsError
from tui_batch.core.export import EXPORT_FORMATS, format_for_path
from tui_batch.core.scoring.methods import Scoring
from tui_batch.core.servers import SERVER_DEFAULTS, SERVER_KEYS, ServerSettings
from tui_batch.core.servers import server_settings_from_text as server_from_values
from tui_batch.core.setting_table import BY_NAME, SETTINGS, Setting
from tui_batch.core.settings import (
    DEFAULT_REMOTE_RETRIES,
    GenerationSettings,
    JobOptions,
    Prices,
    check,
    parse_number,
    settings_from_text,
)
from tui_batch.core.slices import InputSlice, parse_range, parse_shard
from tui_batch.core.structured.schema import AnswerSchema

# Where the prompts come from: a prompts file, or a template (a file or its text) over
# a data file, its records named by a column.
INPUT_KEYS = ("prompts", "template", "template_text", "data", "id_field", "name")
# Which records of the input a job takes (`core.slices`).
SLICE_KEYS = ("limit", "sample", "range", "shard")
# How a local model is run: no setting of servers.
LOCAL_KEYS = tuple(s.name for s in SETTINGS if s.table == "model" and s.name != "model")
_PRICE_KEYS = ("price_in", "price_out")
# What the job may spend (`core.budget`).
BUDGET_KEYS = ("max_cost", "max_total_tokens")
_OUTPUT_KEYS = ("out", "format")
SCORE_KEYS = ("expect", "score", "tolerance")
# The settings `settings_from_text` converts: how the model generates, how a job runs.
_GENERATION_KEYS = tuple(
    s.name
    for s in SETTINGS
    if s.table in ("model", "generation", "run")
    and s.name not in ("model", *_PRICE_KEYS, *BUDGET_KEYS, *SERVER_KEYS)
)


def named(setting: Setting) -> str:
    """A setting as both faces name it: job setup's label, then the flag."""
    return f"{setting.label} ({setting.flag})" if setting.flag else setting.label


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything one run is made from but the prompts themselves. Checked when made
    from values; `given` names the settings that were given (not left to defaults)."""

    prompts: Path | None = None
    template: Path | None = None
    template_text: str | None = None
    data: Path | None = None
    id_field: str | None = None
    # What listings call the job (None: its input file's name, see `BatchJob.name`).
    name: str | None = None
    # A model id or .gguf path (None: the demo model), or the name servers serve it by.
    model: str | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    options: JobOptions = field(default_factory=JobOptions)
    server: ServerSettings | None = None
    output: Path | None = None
    output_format: str | None = None
    prices: Prices | None = None
    scoring: Scoring | None = None
    # Which records of the input the job takes (None: all).
    input_slice: InputSlice | None = None
    # What the job may spend (None: no limit).
    budget: Budget | None = None
    given: frozenset[str] = field(default=frozenset(), compare=False)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> RunSpec:
        """A spec from values keyed by setting name, as text or typed; None (or a key
        left out) is the default. A SettingsError says what is wrong, in the words of
        job setup and the flag."""
        given = {key: value for key, value in values.items() if value is not None}
        for key in given:
            if key not in BY_NAME or BY_NAME[key] not in SETTINGS:
                raise SettingsError(f"Unknown setting {key!r:.40}")
        server_keys = [key for key in SERVER_KEYS if key in given]
        server = None
        if "server" in given:
            local = [key for key in LOCAL_KEYS if key in given]
            if local:
                raise SettingsError(
                    f"{named(BY_NAME[local[0]])} applies to local models only, not to servers"
                )
            urls = given["server"]
            urls = [urls] if isinstance(urls, str) else list(urls)
            if not urls:
                raise SettingsError("Server: at least one endpoint URL is required")
            server = server_from_values(urls, {key: given[key] for key in server_keys})
        elif server_keys:
            raise SettingsError(
                f"{named(BY_NAME[server_keys[0]])} applies to servers only: name a server "
                "too (--server URL; in a job file, [server] urls)"
            )
        generation, options = settings_from_text(
            {key: given[key] for key in _GENERATION_KEYS if key in given},
            remote=server is not None,
        )
        output_format = given.get("format")
        if output_format is not None and output_format not in EXPORT_FORMATS:
            raise SettingsError(
                f"{named(BY_NAME['format'])}: expected one of {', '.join(EXPORT_FORMATS)}, "
                f"got {output_format!r:.40}"
            )
        prices = Prices.from_text(given.get("price_in"), given.get("price_out"))
        budget = Budget.from_values(given.get("max_cost"), given.get("max_total_tokens"))
        if budget is not None and budget.max_cost is not None and prices is None:
            raise SettingsError(
                f"{named(BY_NAME['max_cost'])} needs what tokens cost: give --price-in and "
                "--price-out (per million tokens)"
            )
        return cls(
            input_slice=_slice(given, generation.seed),
            scoring=_scoring(given),
            prompts=_path(given, "prompts"),
            template=_path(given, "template"),
            template_text=_text(given, "template_text"),
            data=_path(given, "data"),
            id_field=_text(given, "id_field"),
            name=_text(given, "name"),
            model=_text(given, "model"),
            generation=generation,
            options=options,
            server=server,
            output=_path(given, "out"),
            output_format=output_format,
            prices=prices,
            budget=budget,
            given=frozenset(given),
        )

    def to_values(self) -> dict[str, Any]:
        """The settings as a job file keeps them, keyed by setting name: each one given
        or not at its default (None is left out; so are a local model's settings for a
        job on servers). `from_values` of these is this spec again."""
        values = self._values()
        defaults = _DEFAULTS
        if self.server is not None:
            defaults = {**defaults, **SERVER_DEFAULTS, "retries": DEFAULT_REMOTE_RETRIES}
        return {
            key: value
            for key, value in values.items()
            if value is not None and (key in self.given or value != defaults.get(key))
        }

    def _values(self) -> dict[str, Any]:
        values: dict[str, Any] = {key: getattr(self, key) for key in INPUT_KEYS}
        chosen = self.input_slice
        values.update(
            limit=chosen.limit if chosen else None,
            sample=chosen.sample if chosen else None,
            range=_range_text(chosen),
            shard=_shard_text(chosen),
        )
        values["model"] = self.model
        values.update(self.generation.to_dict())
        schema = self.generation.schema
        values["schema"] = values["choices"] = None
        if schema is not None:
            values["choices" if schema.choices else "schema"] = schema.setting_value()
        values.update(self.options.to_dict())
        if self.server is not None:
            for key in LOCAL_KEYS:
                del values[key]
            server = self.server.to_dict()
            values["server"] = server.pop("endpoints")
            values.update(server)
        if self.prices is not None:
            values.update(price_in=self.prices.input, price_out=self.prices.output)
        if self.budget is not None:
            values.update(self.budget.to_dict())
        values.update(out=self.output, format=self.output_format)
        scoring = self.scoring
        values.update(
            expect=scoring.expect if scoring else None,
            score=(
                scoring.method_text
                if scoring and (scoring.method != "exact" or "score" in self.given)
                else None
            ),
            tolerance=(
                scoring.tolerance
                if scoring and (scoring.tolerance or "tolerance" in self.given)
                else None
            ),
        )
        return values

    def with_schema(self, schema: AnswerSchema) -> RunSpec:
        """This spec with `schema` for its answers, unless it has one (a template's
        front matter gives one the job's settings may override)."""
        if self.generation.schema is not None:
            return self
        return replace(self, generation=replace(self.generation, schema=schema))

    def with_generation(self, values: Mapping[str, Any]) -> RunSpec:
        """This spec with these generation settings (a template's front matter's), but
        those the spec was given; a SettingsError where together they do not fit (a
        thought's budget past max tokens)."""
        wanted = {key: value for key, value in values.items() if key not in self.given}
        if not wanted:
            return self
        return replace(self, generation=replace(self.generation, **wanted))

    def with_scoring(self, scoring: Scoring) -> RunSpec:
        """This spec scored by `scoring`, unless it says how already (a template's front
        matter gives one the job's settings may override)."""
        return self if self.scoring is not None else replace(self, scoring=scoring)

    @property
    def uses_template(self) -> bool:
        return self.template is not None or self.template_text is not None

    @property
    def results_format(self) -> str:
        """The results file's format: the one given, else the file's extension's, else
        JSON."""
        if self.output_format:
            return self.output_format
        return format_for_path(self.output) if self.output else "json"

    def job_fields(self) -> dict[str, Any]:
        """What a job made from this spec holds of it (BatchJob's fields)."""
        return {
            "settings": self.generation,
            **self.options.to_dict(),
            "server": self.server,
            "output_file": str(self.output.resolve()) if self.output else None,
            "output_format": self.results_format,
            "prices": self.prices,
            "scoring": self.scoring,
            "name": self.name,
            "input_slice": self.input_slice,
            "budget": self.budget,
        }


def _slice(given: Mapping[str, Any], seed: int | None) -> InputSlice | None:
    """The records the job takes, from --limit, --sample (with the seed), --range and
    --shard (None: all)."""
    if not any(key in given for key in SLICE_KEYS):
        return None
    values: dict[str, Any] = {"seed": seed or 0}
    for key in ("limit", "sample"):
        if key in given:
            value = given[key]
            values[key] = parse_number(key, value) if isinstance(value, str) else check(key, value)
    if "range" in given:
        values["start"], values["stop"] = parse_range(str(given["range"]))
    if "shard" in given:
        values["shard"] = parse_shard(str(given["shard"]))
        values["auto"] = str(given["shard"]).strip().lower() == "auto"
    chosen = InputSlice(**values)
    return None if chosen.whole else chosen


def _shard_text(chosen: InputSlice | None) -> str | None:
    if chosen is None or chosen.shard is None:
        return None
    return "auto" if chosen.auto else f"{chosen.shard[0]}/{chosen.shard[1]}"


def _range_text(chosen: InputSlice | None) -> str | None:
    if chosen is None or (chosen.start is None and chosen.stop is None):
        return None
    return f"{chosen.start or ''}:{chosen.stop or ''}"


def _scoring(given: Mapping[str, Any]) -> Scoring | None:
    """How answers are scored, if a column of expected answers is named."""
    expect = _text(given, "expect")
    method = _text(given, "score")
    if expect is None or not expect.strip():
        if method is not None or given.get("tolerance") is not None:
            raise SettingsError(
                f"{named(BY_NAME['score' if method is not None else 'tolerance'])} needs "
                f"{named(BY_NAME['expect'])}: name the column of expected answers"
            )
        return None
    return Scoring.from_text(expect, method, given.get("tolerance"))


def _path(given: Mapping[str, Any], key: str) -> Path | None:
    value = given.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, Path)):
        raise SettingsError(f"{named(BY_NAME[key])}: expected a path, got {value!r:.40}")
    if not str(value).strip():
        raise SettingsError(f"{named(BY_NAME[key])}: the path is empty")
    return Path(value).expanduser()


def _text(given: Mapping[str, Any], key: str) -> str | None:
    value = given.get(key)
    if value is not None and not isinstance(value, str):
        raise SettingsError(f"{named(BY_NAME[key])}: expected text, got {value!r:.40}")
    return value


_DEFAULTS = RunSpec()._values()
