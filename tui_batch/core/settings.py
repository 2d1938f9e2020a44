"""Job settings: the one home of their defaults, limits, validation and text conversion.

`GenerationSettings` (how the model generates) and `JobOptions` (how the engine runs
the job) validate themselves when made, with messages in the words the setup screen
uses. The CLI and the setup screen both turn typed text into settings through
`settings_from_text`. "Automatic" values (threads, parallel) are `None` until a backend
asks `effective_threads` / `effective_parallel`, the one place that resolves them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from tui_batch.core.errors import SettingsError
from tui_batch.core.setting_table import SETTINGS, THRESHOLD, Setting
from tui_batch.core.structured.schema import AnswerSchema, parse_choices, parse_schema

# Prompts decoded together by default. On the CPU a full batch of 16 decodes about 1.9x
# the tokens/s of one (on the 2-core build machine 8 did less, 32 the same with twice
# the KV cache); batch-invariant decoding gains nothing past 4, its groups of at most 7
# running one after another. A GPU has room and compute to spare for more.
DEFAULT_PARALLEL_CPU = 16
DEFAULT_PARALLEL_CPU_INVARIANT = 4
DEFAULT_PARALLEL_GPU = 16
# Retries a job on servers gets unless told otherwise: a 429 or a dropped connection is
# routine there, and one should not fail a prompt.
DEFAULT_REMOTE_RETRIES = 5


# Every number setting, with its label and limits (and the error strategy's threshold).
LIMITS: dict[str, Setting] = {s.name: s for s in (*SETTINGS, THRESHOLD) if s.is_number}


def check(key: str, value: Any) -> Any:
    """`value` if it is allowed for setting `key`, else a SettingsError saying why."""
    limit = LIMITS[key]
    if value is None:
        if limit.blank_is_none:
            return None
        raise SettingsError(f"{limit.label}: a value is required")
    whole = limit.kind == "int"
    number_types = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, number_types):
        kind = "a whole number" if whole else "a number"
        raise SettingsError(f"{limit.label}: expected {kind}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{limit.label}: expected a finite number, got {value!r}")
    if limit.minimum is not None and value < limit.minimum:
        raise SettingsError(f"{limit.label}: must be at least {limit.minimum}, got {value}")
    if limit.maximum is not None and value > limit.maximum:
        raise SettingsError(f"{limit.label}: must be at most {limit.maximum}, got {value}")
    return int(value) if whole else float(value)


def parse_number(key: str, text: str | None) -> Any:
    """Typed text for setting `key` as a checked number; blank text is `None`."""
    limit = LIMITS[key]
    text = (text or "").strip()
    if not text:
        return check(key, None)
    try:
        value: Any = int(text) if limit.kind == "int" else float(text)
    except ValueError:
        kind = "a whole number" if limit.kind == "int" else "a number"
        raise SettingsError(f"{limit.label}: expected {kind}, got {text!r}") from None
    return check(key, value)


@dataclass(frozen=True, slots=True)
class ErrorStrategy:
    """What to do when a prompt fails: `continue`, `stop`, or `threshold:N`."""

    kind: str = "continue"
    threshold: int = 0

    @classmethod
    def parse(cls, text: str) -> ErrorStrategy:
        if not isinstance(text, str):
            raise SettingsError(f"Error strategy: expected text, got {text!r}")
        text = (text or "continue").strip().lower()
        if text in ("continue", "stop"):
            return cls(text)
        if text.startswith("threshold:"):
            count = text.partition(":")[2]
            if count.isdigit() and int(count) > 0:
                return cls("threshold", int(count))
        raise SettingsError(
            f"Error strategy: {text!r} is not one of continue, stop, threshold:N (N >= 1)"
        )

    def should_stop(self, failed: int) -> bool:
        if self.kind == "stop":
            return failed > 0
        if self.kind == "threshold":
            return failed >= self.threshold
        return False

    def __str__(self) -> str:
        return f"threshold:{self.threshold}" if self.kind == "threshold" else self.kind


# How a job uses the answer cache (`core.cache`): not at all, serving answers from it,
# storing its answers in it, or both.
CACHE_MODES = ("off", "read", "write", "read-write")


def parse_cache_mode(text: Any) -> str:
    """A cache mode from typed text (blank is off); anything else is a SettingsError."""
    word = text.strip().lower() if isinstance(text, str) else text
    if word in ("", None):
        return "off"
    if word not in CACHE_MODES:
        raise SettingsError(f"Cache: expected one of {' | '.join(CACHE_MODES)}, got {text!r:.40}")
    return word


def check_stop(value: Any, label: str = "Stop") -> list[str]:
    """Stop strings: one string or a list of them, as a list."""
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise SettingsError(f"{label}: expected a string or a list of strings, got {value!r:.60}")
    return stops


def _check_fields(obj: Any) -> None:
    for f in fields(obj):
        if f.name in LIMITS:
            object.__setattr__(obj, f.name, check(f.name, getattr(obj, f.name)))


@dataclass(slots=True)
class GenerationSettings:
    """How the model generates. Checked when made: a bad value is a SettingsError.

    `n_threads` and `parallel` may be `None`, "automatic": see `effective_threads` and
    `effective_parallel`.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.95
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    system_prompt: str | None = None
    n_ctx: int = 2048
    n_threads: int | None = None
    n_gpu_layers: int = 0
    parallel: int | None = None  # prompts decoded together; 0: one at a time, streamed
    # Decode so that greedy answers are identical to one prompt at a time (slower).
    batch_invariant: bool = False
    # What every answer must be (None: free text), and whether the model is told.
    schema: AnswerSchema | None = None
    schema_prompt: bool = True
    # Models that think: auto | on | off, the thought's token budget (None: no limit)
    # and gpt-oss's effort (None: the model's default). See `core.reasoning`.
    reasoning: str = "auto"
    reasoning_budget: int | None = None
    reasoning_effort: str | None = None

    def __post_init__(self) -> None:
        _check_fields(self)
        self.stop = check_stop(self.stop)
        self.reasoning = parse_word("reasoning", self.reasoning)
        self.reasoning_effort = parse_word("reasoning_effort", self.reasoning_effort)
        budget = self.reasoning_budget
        if budget is not None and self.reasoning == "off":
            raise SettingsError(
                "Reasoning budget (--reasoning-budget): reasoning is off, so there is no "
                "thought to budget"
            )
        if budget is not None and budget >= self.max_tokens:
            raise SettingsError(
                f"Reasoning budget (--reasoning-budget): a thought of {budget} tokens leaves "
                f"no room for the answer in Max tokens (--max-tokens) {self.max_tokens}: "
                "lower it or raise max tokens"
            )
        for name in ("batch_invariant", "schema_prompt"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(
                    f"{SWITCHES[name]}: expected true or false, got {getattr(self, name)!r}"
                )
        if isinstance(self.schema, Mapping):
            self.schema = AnswerSchema.from_dict(self.schema)
        if self.schema is not None and not isinstance(self.schema, AnswerSchema):
            raise SettingsError(f"Schema: expected a schema, got {self.schema!r:.40}")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise SettingsError(f"System prompt: expected text, got {self.system_prompt!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationSettings:
        if not isinstance(data, Mapping):
            raise SettingsError(f"Settings: expected an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["stop"] = list(self.stop)
        data["schema"] = self.schema.to_dict() if self.schema is not None else None
        return data

    @property
    def schema_note(self) -> str | None:
        """What the system prompt says of the schema (None: nothing)."""
        if self.schema is None or not self.schema_prompt:
            return None
        return self.schema.note()

    @property
    def effective_parallel(self) -> int:
        """Prompts decoded together: the setting, else a default for the hardware."""
        if self.parallel is not None:
            return self.parallel
        if self.n_gpu_layers:
            return DEFAULT_PARALLEL_GPU
        return DEFAULT_PARALLEL_CPU_INVARIANT if self.batch_invariant else DEFAULT_PARALLEL_CPU

    @property
    def effective_threads(self) -> int:
        """Threads for llama.cpp: the setting, else half the usable CPUs, 1 to 8.

        More threads than physical cores, or sharing cores with other load, makes
        llama.cpp's spin-waiting threads much slower, not faster.
        """
        if self.n_threads is not None:
            return self.n_threads
        try:
            usable = len(os.sched_getaffinity(0))
        except AttributeError:
            usable = os.cpu_count() or 2
        return max(1, min(8, usable // 2))


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How the engine runs a job: error strategy, retries, checkpoint interval."""

    error_strategy: str = "continue"
    retries: int = 0
    retry_backoff: float = 1.0
    checkpoint_every: int = 5
    # Runs again of an answer that breaks the job's schema.
    invalid_retries: int = 2
    # Runs of each prompt, each with a seed of its own.
    repeats: int = 1
    # Answers served from and stored in the answer cache: off, read, write, read-write.
    cache: str = "off"

    def __post_init__(self) -> None:
        _check_fields(self)
        object.__setattr__(self, "error_strategy", str(ErrorStrategy.parse(self.error_strategy)))
        object.__setattr__(self, "cache", parse_cache_mode(self.cache))

    @property
    def cache_reads(self) -> bool:
        return self.cache in ("read", "read-write")

    @property
    def cache_writes(self) -> bool:
        return self.cache in ("write", "read-write")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


OPTION_KEYS = tuple(f.name for f in fields(JobOptions))


# Settings that are on or off, with what a person calls them.
SWITCHES = {s.name: s.label for s in SETTINGS if s.kind == "bool"}
_ON, _OFF = ("on", "true", "yes", "1"), ("off", "false", "no", "0", "")


def parse_switch(key: str, text: str | bool | None) -> bool:
    """On or off from typed text (on/off, true/false, yes/no, 1/0; blank is off), or
    a bool as it is."""
    if isinstance(text, bool):
        return text
    word = text.strip().lower() if isinstance(text, str) else None
    if word is not None and (word in _ON or word in _OFF):
        return word in _ON
    raise SettingsError(f"{SWITCHES[key]}: expected on or off, got {text!r:.40}")


# Settings that are one of a few words, with the words (the first: the default).
WORDS = {s.name: s for s in SETTINGS if s.words}


def parse_word(key: str, text: Any) -> Any:
    """One of setting `key`'s words from typed text (any case; blank or None is its
    default: the first word, or None where that is blank)."""
    setting = WORDS[key]
    word = text.strip().lower() if isinstance(text, str) else text
    if word in (None, ""):
        return setting.words[0] or None
    if word not in setting.words:
        shown = " | ".join(w for w in setting.words if w)
        raise SettingsError(
            f"{setting.label} ({setting.flag}): expected one of {shown}, got {text!r:.40}"
        )
    return word


def check_reasoning(key: str, value: Any) -> Any:
    """One reasoning setting alone (a template's front matter's), checked: its words,
    or a budget's limits (whether it fits max tokens is checked with the job's)."""
    return parse_word(key, value) if key in WORDS else number_value(key, value)


def number_value(key: str, value: Any) -> Any:
    """A number setting from text (a flag, a field; blank is None) or a number (a job
    file's), checked against its limits."""
    return parse_number(key, value) if isinstance(value, str) else check(key, value)


def settings_from_text(
    given: Mapping[str, Any], base: GenerationSettings | None = None, remote: bool = False
) -> tuple[GenerationSettings, JobOptions]:
    """Settings from what a flag, a setup field or a job file gives, keyed by setting
    name: text (numbers as typed) or values of their type, converted and checked once.

    A key left out keeps `base`'s value (or the default). Blank text keeps the default,
    or means "automatic" / "not set" where the setting has that (threads, parallel, seed).
    `error_strategy` is `continue`, `stop` or `threshold:N`; `stop` may hold a list.
    A `remote` job (on servers) retries DEFAULT_REMOTE_RETRIES times unless told.
    """
    base = base or GenerationSettings()
    generation: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, text in given.items():
        if key in SWITCHES:
            value: Any = parse_switch(key, text)
        elif key == "system_prompt":
            if text is not None and not isinstance(text, str):
                raise SettingsError(f"System prompt: expected text, got {text!r:.40}")
            value = (text or "").strip() or None
        elif key == "stop":
            value = text
        elif key in ("schema", "choices"):
            if "schema" in given and "choices" in given:
                raise SettingsError("Schema and Choices: give one or the other")
            blank = isinstance(text, str) and not text.strip()
            value = (
                None if blank else parse_schema(text) if key == "schema" else parse_choices(text)
            )
            key = "schema"
        elif key == "error_strategy":
            value = str(ErrorStrategy.parse(text or "continue"))
        elif key == "cache":
            value = parse_cache_mode(text)
        elif key in WORDS:
            value = parse_word(key, text)
        elif key in LIMITS:
            blank = isinstance(text, str) and not text.strip()
            if blank and not LIMITS[key].blank_is_none:
                continue  # blank: the default
            value = number_value(key, text)
        else:
            raise SettingsError(f"Unknown setting {key!r}")
        (options if key in OPTION_KEYS else generation)[key] = value
    if remote and "retries" not in options:
        options["retries"] = DEFAULT_REMOTE_RETRIES
    return replace(base, **generation), JobOptions(**options)


# What one request may set for itself (an OpenAI Batch API body, a job file row).
REQUEST_OPTIONS = ("max_tokens", "temperature", "top_p", "seed", "stop")


def check_request_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Per-request overrides, checked like the job's settings. `None` means not given."""
    if not isinstance(options, Mapping):
        raise SettingsError(f"request options: expected an object, got {options!r:.60}")
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if key not in REQUEST_OPTIONS:
            raise SettingsError(f"unknown request option {key!r:.60}")
        if value is None:
            continue
        # A request's keys are named as in its file (lower case), not as in job setup.
        checked[key] = check_stop(value, "stop") if key == "stop" else check(key, value)
    return checked


@dataclass(frozen=True, slots=True)
class Prices:
    """What a million input and output tokens cost, in the user's currency; `discount`
    the share of that a job pays (a Batch API's: 0.5 at OpenAI). A job keeps the prices
    as given; its discount comes from its servers' settings (`ServerSettings.priced`)."""

    input: float
    output: float
    discount: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", float(check("price_in", self.input)))
        object.__setattr__(self, "output", float(check("price_out", self.output)))
        object.__setattr__(self, "discount", float(check("batch_discount", self.discount)))

    def to_dict(self) -> dict[str, float]:
        data = {"input": self.input, "output": self.output}
        return data if self.discount == 1.0 else {**data, "discount": self.discount}

    def cost(self, tokens_in: float, tokens_out: float) -> float:
        """What these many input and output tokens cost."""
        return (tokens_in * self.input + tokens_out * self.output) / 1e6 * self.discount

    @classmethod
    def from_text(cls, price_in: Any, price_out: Any) -> Prices | None:
        """Prices from typed text (flags, fields) or numbers (a job file's): both blank
        is none; one without the other is a SettingsError."""
        given = [
            value.strip() if isinstance(value, str) else value for value in (price_in, price_out)
        ]
        if all(value in (None, "") for value in given):
            return None
        if any(value in (None, "") for value in given):
            raise SettingsError("Prices: give both, what a million input and output tokens cost")
        return cls(number_value("price_in", given[0]), number_value("price_out", given[1]))
