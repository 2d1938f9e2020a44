"""The `tui-batch` command line: its commands and flags, and how flags become settings
(through the core's one conversion, `settings_from_text` / `server_settings_from_text`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from tui_batch import __version__
from tui_batch.core.compare import ORDERS, STATES
from tui_batch.core.errors import SettingsError
from tui_batch.core.export import EXPORT_FORMATS, STATS_FORMAT
from tui_batch.core.servers import (
    DEFAULT_KEY_ENV,
    SERVER_DEFAULTS,
    SERVER_KEYS,
    ServerSettings,
    server_settings_from_text,
)
from tui_batch.core.settings import LIMITS, GenerationSettings, JobOptions, Prices

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _setting(key: str, help: str = "") -> dict[str, object]:
    """argparse options for a setting: its text is checked by the core, not here."""
    limit = LIMITS[key]
    default = getattr(GenerationSettings(), key, None)
    if default is None:
        default = getattr(JobOptions(), key, None)
    if default is None:
        default = SERVER_DEFAULTS.get(key)
    shown = limit.hint if default is None else default
    return {
        "dest": key,
        "default": None,
        "metavar": "N",
        "help": f"{help or limit.label} (default: {shown})",
    }


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tui-batch",
        description="Run batches of prompts through local LLMs or OpenAI-compatible servers.",
    )
    parser.add_argument("--version", action="version", version=f"tui-batch {__version__}")
    parser.epilog = "With no command, or with just a prompts or job file, opens the dashboard."
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, required=True)

    run = commands.add_parser(
        "run", help="run a prompts file, a template over a data file, or a job file, headless"
    )
    run.add_argument(
        "source",
        type=Path,
        nargs="?",
        metavar="PROMPTS|JOB.toml",
        help="a .txt, .json, .jsonl or .csv file of prompts, or a job file (.toml) with "
        "every setting (flags given as well override it)",
    )
    _add_template_options(run)
    run.add_argument(
        "--save-job",
        type=Path,
        metavar="JOB.toml",
        help="write these settings to a job file and exit, without running",
    )
    run.add_argument(
        "--model",
        help="a model id (see `tui-batch models`) or a .gguf path; default: the demo model. "
        "With --server: the served model's name (default: the one model it serves)",
    )
    _add_output_options(run)
    run.add_argument(
        "--error-strategy",
        default=None,
        metavar="S",
        help="continue | stop | threshold:N (default: continue)",
    )
    run.add_argument("--retries", **_setting("retries", "retries per failed prompt"))
    run.add_argument(
        "--retry-backoff",
        **_setting("retry_backoff", "seconds before the first retry, doubled for each next one"),
    )
    run.add_argument(
        "--checkpoint-every", **_setting("checkpoint_every", "save the checkpoint every N results")
    )
    run.add_argument("--max-tokens", **_setting("max_tokens"))
    run.add_argument("--temperature", **_setting("temperature", "temperature; 0 is greedy"))
    run.add_argument("--top-p", **_setting("top_p"))
    run.add_argument("--seed", **_setting("seed"))
    run.add_argument("--stop", action="append", default=None, help="a stop string (repeatable)")
    run.add_argument(
        "--system", dest="system_prompt", help="system prompt for every prompt without its own"
    )
    run.add_argument("--n-ctx", **_setting("n_ctx", "context size in tokens"))
    _add_price_options(run)
    _add_hardware_options(run)
    _add_server_options(run)

    resume = commands.add_parser("resume", help="resume a job from its checkpoint")
    resume.add_argument("job_id")
    resume.add_argument("--retry-failed", action="store_true", help="run failed prompts again too")
    resume.add_argument(
        "--force",
        action="store_true",
        help="go on with the prompts stored in the job even though its template or data "
        "file changed since it was made",
    )
    _add_hardware_options(resume)
    _add_server_options(resume, resuming=True)

    listing = commands.add_parser("checkpoints", help="list checkpoints")
    listing.add_argument("--json", action="store_true", help="print JSON")

    export = commands.add_parser("export", help="export a job's results")
    export.add_argument("job_id")
    export.add_argument(
        "--format",
        choices=(*EXPORT_FORMATS, STATS_FORMAT),
        default=None,
        help=f"results as {', '.join(EXPORT_FORMATS)} (default: from --out's extension), "
        f"or {STATS_FORMAT}: the job's figures, as `tui-batch stats --json` prints them",
    )
    export.add_argument("--out", type=Path, required=True)
    export.add_argument(
        "--allow-formulas",
        action="store_true",
        help="CSV: keep cells that start with = + - @ as they are",
    )

    stats = commands.add_parser(
        "stats",
        help="a job's figures: counts, tokens/s, latency and first-token percentiles, "
        "failures by reason, per server, cost",
    )
    stats.add_argument("job_id")
    stats.add_argument("--json", action="store_true", help="print JSON")
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
        "--limit", type=int, default=20, metavar="N", help="rows printed as text (default 20)"
    )

    models = commands.add_parser(
        "models", help="list the GGUF models found, or the models a server serves"
    )
    models.add_argument("--json", action="store_true", help="print JSON")
    models.add_argument(
        "--server", action="append", metavar="URL", help="list this server's models instead"
    )
    models.add_argument("--api-key-env", metavar="VAR", help=f"default: {DEFAULT_KEY_ENV}")
    return parser


def _add_server_options(parser: argparse.ArgumentParser, resuming: bool = False) -> None:
    group = parser.add_argument_group(
        "servers", "run on OpenAI-compatible servers (vLLM, llama-server, Ollama, a router...)"
    )
    group.add_argument(
        "--server",
        action="append",
        metavar="URL[#N]",
        help="a server's base URL, like http://127.0.0.1:8000/v1; #N caps requests in "
        "flight there; repeat for several" + ("; replaces the job's servers" if resuming else ""),
    )
    group.add_argument(
        "--api-key-env",
        metavar="VAR",
        help=f"the environment variable holding the API key (default: {DEFAULT_KEY_ENV}); "
        "the key itself is never stored",
    )
    group.add_argument("--concurrency", **_setting("concurrency", "requests in flight overall"))
    group.add_argument("--rpm", **_setting("rpm", "requests per minute at most"))
    group.add_argument("--tpm", **_setting("tpm", "tokens per minute at most (estimated)"))
    group.add_argument("--connect-timeout", **_setting("connect_timeout", "seconds to connect"))
    group.add_argument(
        "--first-token-timeout",
        **_setting("first_token_timeout", "seconds to the first streamed byte"),
    )
    group.add_argument("--stall-timeout", **_setting("stall_timeout", "seconds a stream may stall"))
    group.add_argument(
        "--request-timeout", **_setting("request_timeout", "seconds for a whole request")
    )
    group.add_argument(
        "--no-stream",
        dest="stream",
        action="store_const",
        const=False,
        default=None,
        help="ask for whole answers instead of streams",
    )


def _add_price_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--price-in",
        metavar="PRICE",
        help="what a million input tokens cost; with --price-out, the stats show the cost",
    )
    parser.add_argument("--price-out", metavar="PRICE", help="what a million output tokens cost")


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
    group.add_argument("--template", type=Path, metavar="FILE", help="a template file")
    group.add_argument("--template-text", metavar="TEXT", help="the template itself")
    group.add_argument(
        "--data",
        type=Path,
        metavar="FILE",
        help="the records that fill the template: .csv (with a header), .jsonl, .json "
        "(an array of objects) or .parquet (with pyarrow)",
    )
    group.add_argument(
        "--id-field",
        metavar="NAME",
        help="the data column that names each record in the results (default: its number)",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="results file (default: in the data dir)")
    parser.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default=None,
        help="results format (default: from --out's extension, else json)",
    )


def _add_hardware_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", **_setting("n_threads", "llama.cpp threads; auto: half the CPUs, at most 8")
    )
    parser.add_argument(
        "--gpu-layers", **_setting("n_gpu_layers", "layers to offload to the GPU; -1 for all")
    )
    parser.add_argument(
        "--parallel",
        **_setting(
            "parallel",
            "prompts decoded together in one context (continuous batching); 0: one at a "
            "time, streamed; auto: 16 on the CPU (4 with --batch-invariant), 16 with GPU "
            "layers",
        ),
    )
    parser.add_argument(
        "--batch-invariant",
        dest="batch_invariant",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode so that greedy answers are identical, token for token, to one prompt "
        "at a time (slower; default: off, full batches, whose answers may differ after "
        "some tokens)",
    )


SETTING_FLAGS = (
    "error_strategy",
    "retries",
    "retry_backoff",
    "checkpoint_every",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "system_prompt",
    "n_ctx",
    "n_threads",
    "n_gpu_layers",
    "parallel",
    "batch_invariant",
)


LOCAL_FLAGS = {
    "n_ctx": "--n-ctx",
    "n_threads": "--threads",
    "n_gpu_layers": "--gpu-layers",
    "parallel": "--parallel",
    "batch_invariant": "--batch-invariant",
}


def given_settings(args: argparse.Namespace) -> dict[str, str | None]:
    """The setting flags given on the command line, as text for `settings_from_text`."""
    given = {
        key: getattr(args, key) for key in SETTING_FLAGS if getattr(args, key, None) is not None
    }
    if "batch_invariant" in given:
        given["batch_invariant"] = "on" if given["batch_invariant"] else "off"
    return given


def server_settings(args: argparse.Namespace, base: ServerSettings | None) -> ServerSettings | None:
    """The servers the flags name (over `base`'s), or None for a local model."""
    given = _server_flags(args)
    if not args.server and base is None:
        if given:
            flag = "--" + next(iter(given)).replace("_", "-")
            raise SettingsError(f"{flag} applies to servers only; add --server URL")
        return None
    local = [flag for key, flag in LOCAL_FLAGS.items() if getattr(args, key, None) is not None]
    if local:
        raise SettingsError(f"{local[0]} applies to local models only, not to --server")
    return server_settings_from_text(args.server or [], given, base)


def _server_flags(args: argparse.Namespace) -> dict[str, object]:
    return {k: getattr(args, k) for k in SERVER_KEYS if getattr(args, k, None) is not None}


def server_flags_given(args: argparse.Namespace) -> bool:
    """Whether any flag about servers was given (`--server` or a limit)."""
    return bool(getattr(args, "server", None) or _server_flags(args))
