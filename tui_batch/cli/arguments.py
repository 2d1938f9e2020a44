"""The `tui-batch` command line: its commands and flags, and how flags become settings
(through the core's one conversion, `settings_from_text` / `server_settings_from_text`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from tui_batch import __version__
from tui_batch.core.compare import ORDERS, STATES
from tui_batch.core.dry_run import DEFAULT_SAMPLE
from tui_batch.core.errors import SettingsError
from tui_batch.core.export import EXPORT_FORMATS, STATS_FORMAT
from tui_batch.core.run_spec import LOCAL_KEYS, named
from tui_batch.core.servers import (
    DEFAULT_KEY_ENV,
    SERVER_DEFAULTS,
    SERVER_KEYS,
    ServerSettings,
    server_settings_from_text,
)
from tui_batch.core.setting_table import BATCH_KEYS, BY_NAME, SETTINGS
from tui_batch.core.settings import GenerationSettings, JobOptions, Prices

EXIT_USAGE = 2
# The other exit statuses: every prompt answered; some failed, or the job stopped on its
# own; Ctrl+C; a reader of stdout that went away.
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 130, 141
# Each setting's default, shown in its flag's help.
_DEFAULTS: dict[str, Any] = {
    **GenerationSettings().to_dict(),
    **JobOptions().to_dict(),
    **SERVER_DEFAULTS,
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _flag(parser: argparse._ActionsContainer, name: str, note: str = "", **options: Any) -> None:
    """The flag of setting `name`, with its help from the table of settings (and `note`).
    Its value is kept as given (text) and checked by the core, with the rest."""
    setting = BY_NAME[name]
    help = setting.help + note
    if setting.is_number:
        default = _DEFAULTS.get(name)
        shown = setting.hint if default is None and setting.blank_is_none else default
        if shown is not None:
            help = f"{help} (default: {shown})"
        options.setdefault("metavar", "N")
    options.setdefault("default", None)
    parser.add_argument(setting.flag, dest=name, help=help, **options)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tui-batch",
        description="Run batches of prompts through local LLMs or OpenAI-compatible servers.",
    )
    parser.add_argument("--version", action="version", version=f"tui-batch {__version__}")
    parser.epilog = (
        "With no command, or with just a prompts or job file, opens the dashboard "
        "(tui-batch [--max-models N] [PROMPTS|JOB.toml]: N local models may be loaded at "
        "once for the jobs it runs, default 1)."
    )
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, required=True)

    run = commands.add_parser(
        "run", help="run a prompts file, a template over a data file, or a job file, headless"
    )
    run.add_argument(
        "source",
        type=Path,
        nargs="*",
        metavar="PROMPTS|JOB.toml",
        help="a .txt, .json, .jsonl or .csv file of prompts, or a job file (.toml) with "
        "every setting (flags given as well override it); several: a job each, made "
        "together as one group and run in one process",
    )
    _add_template_options(run)
    _add_slice_options(run)
    run.add_argument(
        "--save-job",
        type=Path,
        metavar="JOB.toml",
        help="write these settings to a job file and exit, without running",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="say what the run would do (prompts, cache hits, tokens, cost, time) and make "
        "nothing; the time is measured on a sample of real answers (--dry-run-sample)",
    )
    run.add_argument(
        "--dry-run-sample",
        type=_count,
        default=None,
        metavar="N",
        help=f"prompts a dry run answers to time the job and measure its answers' length "
        f"(default: {DEFAULT_SAMPLE}; 0: none)",
    )
    run.add_argument(
        "--matrix",
        action="append",
        metavar="KEY=V1,V2",
        help="run a group of jobs, one for each combination of these values (repeat for "
        "more settings; a fleet's URLs joined with +), then rank them: tui-batch stats GROUP",
    )
    _add_group_options(run)
    _flag(run, "name", metavar="NAME")
    _flag(run, "model")
    _add_output_options(run)
    _flag(run, "error_strategy", metavar="S")
    _flag(run, "cache", metavar="MODE")
    for name in ("retries", "retry_backoff", "checkpoint_every"):
        _flag(run, name)
    for name in ("max_tokens", "temperature", "top_p", "seed"):
        _flag(run, name)
    _flag(run, "stop", action="append")
    _flag(run, "system_prompt")
    _flag(run, "reasoning", choices=BY_NAME["reasoning"].words)
    _flag(run, "reasoning_budget")
    _flag(run, "reasoning_effort", choices=[w for w in BY_NAME["reasoning_effort"].words if w])
    _add_schema_options(run)
    _add_score_options(run)
    _flag(run, "n_ctx")
    _add_price_options(run)
    _add_budget_options(run)
    _add_hardware_options(run)
    _add_server_options(run)

    resume = commands.add_parser("resume", help="resume a job from its checkpoint")
    resume.add_argument(
        "job_id",
        metavar="JOB|GROUP",
        help="the job's id (tui-batch checkpoints lists them), or a group's: each of its jobs",
    )
    resume.add_argument("--retry-failed", action="store_true", help="run failed prompts again too")
    resume.add_argument(
        "--force",
        action="store_true",
        help="go on with the prompts stored in the job even though its template or data "
        "file changed since it was made",
    )
    _add_group_options(resume)
    _add_hardware_options(resume)
    _add_server_options(resume, resuming=True)
    _add_budget_options(resume, resuming=True)

    listing = commands.add_parser("checkpoints", help="list checkpoints")
    listing.add_argument("--json", action="store_true", help="print JSON")

    batches = commands.add_parser(
        "batches",
        help="a Batch API job's batches: each one's status, counts and times, asked of the "
        "provider for those still in flight",
    )
    batches.add_argument("job_id", metavar="JOB", help="the job's id")
    batches.add_argument("--json", action="store_true", help="print JSON")
    batches.add_argument(
        "--recorded",
        action="store_true",
        help="as the checkpoint last recorded them, without asking the provider",
    )

    merge = commands.add_parser(
        "merge",
        help="join the shards of a job (each run with --shard I/N, here or elsewhere) into one job",
    )
    merge.add_argument(
        "shards",
        nargs="+",
        metavar="JOB|FILE",
        help="every shard: a job id, or a checkpoint file (batch_ID.db) from another machine",
    )
    merge.add_argument("--name", help="the joined job's name (default: the shards')")

    export = commands.add_parser("export", help="export a job's results")
    export.add_argument("job_id", help="the job's id (tui-batch checkpoints lists them)")
    export.add_argument(
        "--format",
        choices=(*EXPORT_FORMATS, STATS_FORMAT),
        default=None,
        help=f"results as {', '.join(EXPORT_FORMATS)} (default: from --out's extension), "
        f"or {STATS_FORMAT}: the job's figures, as `tui-batch stats --json` prints them",
    )
    export.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the file to write: .json, .csv or .jsonl (its format, unless --format says)",
    )
    export.add_argument(
        "--allow-formulas",
        action="store_true",
        help="CSV: keep cells that start with = + - @ as they are",
    )

    score = commands.add_parser(
        "score",
        help="score a job's answers again against expected ones, without running a prompt",
    )
    score.add_argument("job_id", help="the job's id (tui-batch checkpoints lists them)")
    _flag(score, "expect", "; default: the job's", metavar="COLUMN")
    _flag(score, "score", "; default: the job's, else exact", metavar="METHOD")
    _flag(score, "tolerance", metavar="X")
    score.add_argument("--json", action="store_true", help="print JSON")

    stats = commands.add_parser(
        "stats",
        help="a job's figures: counts, tokens/s, latency and first-token percentiles, "
        "failures by reason, per server, cost",
    )
    stats.add_argument(
        "job_id",
        metavar="JOB|GROUP",
        help="the job's id (tui-batch checkpoints lists them), or a group's: its leaderboard",
    )
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.add_argument("--csv", action="store_true", help="a group's leaderboard as CSV")
    _add_price_options(stats)

    compare = commands.add_parser(
        "compare", help="jobs over the same prompts side by side: identical, different, failed"
    )
    compare.add_argument("job_ids", nargs="+", metavar="JOB", help="two to eight job ids")
    shape = compare.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="the summary and every row as JSON")
    shape.add_argument("--csv", action="store_true", help="every row as CSV")
    compare.add_argument("--out", type=Path, help="write the JSON or CSV here, not to stdout")
    compare.add_argument("--sort", choices=ORDERS, default="index", help="row order")
    compare.add_argument("--state", choices=STATES, help="only rows in this state")
    compare.add_argument("--search", metavar="TEXT", help="only rows whose id or answers hold TEXT")
    compare.add_argument(
        "--field",
        metavar="NAME",
        help="jobs whose answers have a schema: only rows where this field's values differ",
    )
    compare.add_argument(
        "--regressions",
        action="store_true",
        help="jobs with scores: only prompts right in one job and wrong in another, "
        "regressions (right in the first job, wrong in a later one) first",
    )
    compare.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when a later job is wrong where the first job was right (for CI)",
    )
    compare.add_argument(
        "--limit", type=int, default=20, metavar="N", help="rows printed as text (default 20)"
    )

    _add_cache_command(commands)

    models = commands.add_parser(
        "models", help="list the GGUF models found, or the models a server serves"
    )
    models.add_argument("--json", action="store_true", help="print JSON")
    models.add_argument(
        "--server", action="append", metavar="URL", help="list this server's models instead"
    )
    models.add_argument("--api-key-env", metavar="VAR", help=f"default: {DEFAULT_KEY_ENV}")
    return parser


def _add_cache_command(commands: Any) -> None:
    cache = commands.add_parser(
        "cache",
        help="the answer cache (--cache): its figures, clearing it, pruning it",
        description="Answers reused across jobs live in one file: $TUI_BATCH_CACHE, else "
        "cache.db in the data dir.",
    )
    actions = cache.add_subparsers(dest="cache_command", parser_class=_Parser, required=True)
    stats = actions.add_parser("stats", help="size, answers, how often they were served, per model")
    stats.add_argument("--json", action="store_true", help="print JSON")
    clear = actions.add_parser("clear", help="delete every answer (a damaged file: the file)")
    clear.add_argument(
        "--model", metavar="NAME", help="only this model's answers, as cache stats names it"
    )
    prune = actions.add_parser(
        "prune", help="delete answers not used for a while, or the least used past a size"
    )
    prune.add_argument(
        "--older-than", metavar="AGE", help="not used for this long: 14d, 12h, 2w, 30m"
    )
    prune.add_argument(
        "--max-size", metavar="SIZE", help="least recently used first, to this size: 1GB, 500MB"
    )


def _add_server_options(parser: argparse.ArgumentParser, resuming: bool = False) -> None:
    group = parser.add_argument_group(
        "servers", "run on OpenAI-compatible servers (vLLM, llama-server, Ollama, a router...)"
    )
    replaces = "; replaces the job's servers" if resuming else ""
    _flag(group, "server", replaces, action="append", metavar="URL[#N]")
    _flag(group, "api_key_env", metavar="VAR")
    for name in SERVER_KEYS:
        if BY_NAME[name].is_number and name not in BATCH_KEYS:
            _flag(group, name)
    _flag(group, "stream", action="store_const", const=False)
    batch = parser.add_argument_group(
        "Batch API", "the servers' /files and /batches endpoints instead of live requests"
    )
    for name in BATCH_KEYS:
        setting = BY_NAME[name]
        if setting.is_number:
            _flag(batch, name)
        else:
            _flag(batch, name, action="store_const", const=True)


def _add_schema_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "structured answers", "every answer checked against a schema, and enforced while decoding"
    )
    shape = group.add_mutually_exclusive_group()
    _flag(shape, "schema", metavar="SCHEMA")
    _flag(shape, "choices", metavar="A,B,...")
    _flag(group, "schema_prompt", action="store_const", const=False)
    _flag(group, "invalid_retries")


def _add_score_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "scores", "each answer scored against its record's expected answer; runs repeated"
    )
    _flag(group, "expect", metavar="COLUMN")
    _flag(group, "score", metavar="METHOD")
    _flag(group, "tolerance", metavar="X")
    _flag(group, "repeats", metavar="N")


def _add_price_options(parser: argparse.ArgumentParser) -> None:
    _flag(parser, "price_in", metavar="PRICE")
    _flag(parser, "price_out", metavar="PRICE")


def _add_budget_options(parser: argparse.ArgumentParser, resuming: bool = False) -> None:
    group = parser.add_argument_group(
        "budget",
        "the job stops, resumable, before a prompt that could take it past these"
        + ("; given to resume, they replace the job's" if resuming else ""),
    )
    _flag(group, "max_cost", metavar="COST")
    _flag(group, "max_total_tokens")


def prices(args: argparse.Namespace) -> Prices | None:
    """The prices given, or None; one without the other is an error."""
    given = (getattr(args, "price_in", None), getattr(args, "price_out", None))
    if None not in given or given == (None, None):
        return Prices.from_text(*given)
    raise SettingsError("give both --price-in and --price-out (per million tokens)")


def _add_template_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "templates", "prompts rendered from a Jinja2 template, once per record of a data file"
    )
    _flag(group, "template", type=Path, metavar="FILE")
    _flag(group, "template_text", metavar="TEXT")
    _flag(group, "data", type=Path, metavar="FILE")
    _flag(group, "id_field", metavar="NAME")


def _count(text: str) -> int:
    """A whole number from 0, for argparse."""
    if not text.strip().isdigit() or int(text) > 100_000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 100000, got {text!r}")
    return int(text)


def _add_slice_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "slices and shards",
        "which records of the input to run (counted from 1 as the file gives them); "
        "--seed seeds --sample",
    )
    _flag(group, "limit")
    _flag(group, "sample")
    _flag(group, "range", metavar="A:B")
    _flag(group, "shard", metavar="I/N|auto")


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    _flag(parser, "out", type=Path)
    _flag(parser, "format", choices=EXPORT_FORMATS)


def _add_group_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-models",
        type=_count,
        default=1,
        metavar="N",
        help="a group's jobs run at once; jobs on other local models than the one loaded "
        "wait for it to be free, unless N models fit in memory at once (default: 1)",
    )


def _add_hardware_options(parser: argparse.ArgumentParser) -> None:
    for name in ("n_threads", "n_gpu_layers", "parallel"):
        _flag(parser, name)
    _flag(parser, "batch_invariant", action=argparse.BooleanOptionalAction)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given by flags, keyed by setting name, as given (numbers as text)."""
    return {
        s.name: getattr(args, s.name) for s in SETTINGS if getattr(args, s.name, None) is not None
    }


def server_settings(args: argparse.Namespace, base: ServerSettings) -> ServerSettings:
    """A job's servers (`base`) with the flags given laid over them (`resume`)."""
    given = flag_values(args)
    local = [name for name in LOCAL_KEYS if name in given]
    if local:
        raise SettingsError(
            f"{named(BY_NAME[local[0]])} applies to local models only, not to servers"
        )
    return server_settings_from_text(
        args.server or [], {k: v for k, v in given.items() if k in SERVER_KEYS}, base
    )


def server_flags_given(args: argparse.Namespace) -> bool:
    """Whether any flag about servers was given (`--server` or a limit)."""
    given = flag_values(args)
    return any(name in given for name in ("server", *SERVER_KEYS))
