"""Every setting of a run, declared once: what a person calls it, its type and limits,
where a job file keeps it, its command-line flag and its help.

The numbers' checks (`settings.check`, `parse_number`), the job file's schema
(`jobfile`), the command line's flags (`cli.arguments`) and job setup's fields all read
this table, so a setting's name, label, limits and help cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from tui_batch.core.reasoning import EFFORTS, REASONING_MODES

# What a number setting's value is, and the other kinds of setting there are.
NUMBER_KINDS = ("int", "float")
KINDS = (*NUMBER_KINDS, "bool", "text", "path", "urls", "stop", "schema", "choices")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting. `name` is its name in code (a `GenerationSettings` field, a job
    option, ...), `label` what job setup and messages call it, `kind` one of KINDS;
    `table` and `key` where a job file keeps it; `flag` its command-line flag (None: not
    a flag of `run`). Numbers have limits; a blank one (`blank_is_none`) means "choose
    for me" or "not set"."""

    name: str
    label: str
    kind: str
    table: str
    key: str
    flag: str | None = None
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    blank_is_none: bool = False
    hint: str = ""
    # A text setting that is one of these words (the first is its default).
    words: tuple[str, ...] = ()

    @property
    def is_number(self) -> bool:
        return self.kind in NUMBER_KINDS


# llama.cpp holds at most 256 sequences in a context; one holds the shared prompt prefix.
MAX_PARALLEL = 255

SETTINGS: tuple[Setting, ...] = (
    # Where the prompts come from.
    Setting(
        "prompts",
        "Prompts file",
        "path",
        "input",
        "prompts",
        None,
        "a prompts file (.txt .json .jsonl .csv)",
    ),
    Setting(
        "template",
        "Template file",
        "path",
        "input",
        "template",
        "--template",
        "a Jinja2 template file",
    ),
    Setting(
        "template_text",
        "Template",
        "text",
        "input",
        "template_text",
        "--template-text",
        "the template itself",
    ),
    Setting(
        "data",
        "Data file",
        "path",
        "input",
        "data",
        "--data",
        "the records that fill the template: .csv (with a header), .jsonl, .json "
        "(an array of objects), .parquet (with pyarrow), or job:ID: a finished job's "
        "answers (prompt, response, its fields, its record's, expected)",
    ),
    Setting(
        "name",
        "Job name",
        "text",
        "input",
        "name",
        "--name",
        "a name for the job in listings, stats and compare (default: the job file's "
        "name, else the prompts or data file's)",
    ),
    Setting(
        "limit",
        "Limit",
        "int",
        "input",
        "limit",
        "--limit",
        "run only the first N records of the input (after --range and --shard)",
        1,
        blank_is_none=True,
        hint="records",
    ),
    Setting(
        "sample",
        "Sample",
        "int",
        "input",
        "sample",
        "--sample",
        "run N records drawn at random in one pass, in the file's order (the same N for "
        "the same --seed)",
        1,
        blank_is_none=True,
        hint="records",
    ),
    Setting(
        "range",
        "Range",
        "text",
        "input",
        "range",
        "--range",
        "run records A to B of the input, counted from 1, both included (100:200, 5000:)",
    ),
    Setting(
        "shard",
        "Shard",
        "text",
        "input",
        "shard",
        "--shard",
        "run shard I of N (every Nth record, from the Ith): I/N, or auto from "
        "SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX (with TUI_BATCH_SHARDS) or "
        "SKYPILOT_JOB_RANK; join the shards with tui-batch merge",
    ),
    Setting(
        "id_field",
        "Id column",
        "text",
        "input",
        "id_field",
        "--id-field",
        "the data column that names each record in the results (default: its number)",
    ),
    # The model, local.
    Setting(
        "model",
        "Model",
        "text",
        "model",
        "name",
        "--model",
        "a model id (see `tui-batch models`) or a .gguf path; default: the demo model. "
        "With servers: the served model's name (default: the one model they serve)",
    ),
    Setting(
        "n_ctx",
        "Context size",
        "int",
        "model",
        "n_ctx",
        "--n-ctx",
        "context size in tokens",
        16,
        2**24,
        hint="tokens",
    ),
    Setting(
        "n_threads",
        "Threads",
        "int",
        "model",
        "threads",
        "--threads",
        "llama.cpp threads; auto: half the CPUs, at most 8",
        1,
        1024,
        blank_is_none=True,
        hint="auto",
    ),
    Setting(
        "n_gpu_layers",
        "GPU layers",
        "int",
        "model",
        "gpu_layers",
        "--gpu-layers",
        "layers to offload to the GPU; -1 for all",
        -1,
        hint="-1 = all",
    ),
    Setting(
        "parallel",
        "Parallel",
        "int",
        "model",
        "parallel",
        "--parallel",
        "prompts decoded together in one context (continuous batching); 0: one at a "
        "time, streamed; auto: 16 on the CPU (4 with --batch-invariant), 16 with GPU "
        "layers",
        0,
        MAX_PARALLEL,
        blank_is_none=True,
        hint="auto; 0 = one at a time",
    ),
    Setting(
        "batch_invariant",
        "Batch-invariant",
        "bool",
        "model",
        "batch_invariant",
        "--batch-invariant",
        "decode so that greedy answers are identical, token for token, to one prompt "
        "at a time (slower; default: off, full batches, whose answers may differ after "
        "some tokens)",
    ),
    # Servers.
    Setting(
        "server",
        "Servers",
        "urls",
        "server",
        "urls",
        "--server",
        "a server's base URL, like http://127.0.0.1:8000/v1; #N caps requests in "
        "flight there; repeat for several",
    ),
    Setting(
        "api_key_env",
        "API key variable",
        "text",
        "server",
        "api_key_env",
        "--api-key-env",
        "the environment variable holding the API key (default: "
        "OPENAI_API_KEY); the key itself is never stored",
    ),
    Setting(
        "concurrency",
        "Concurrency",
        "int",
        "server",
        "concurrency",
        "--concurrency",
        "requests in flight overall",
        1,
        4096,
        hint="requests in flight",
    ),
    Setting(
        "rpm",
        "Requests/min",
        "int",
        "server",
        "rpm",
        "--rpm",
        "requests per minute at most",
        1,
        blank_is_none=True,
        hint="no limit",
    ),
    Setting(
        "tpm",
        "Tokens/min",
        "int",
        "server",
        "tpm",
        "--tpm",
        "tokens per minute at most (estimated)",
        1,
        blank_is_none=True,
        hint="no limit",
    ),
    Setting(
        "connect_timeout",
        "Connect timeout",
        "float",
        "server",
        "connect_timeout",
        "--connect-timeout",
        "seconds to connect",
        0.1,
        600.0,
        hint="seconds",
    ),
    Setting(
        "first_token_timeout",
        "First token timeout",
        "float",
        "server",
        "first_token_timeout",
        "--first-token-timeout",
        "seconds to the first streamed byte",
        0.1,
        86400.0,
        hint="seconds",
    ),
    Setting(
        "stall_timeout",
        "Stall timeout",
        "float",
        "server",
        "stall_timeout",
        "--stall-timeout",
        "seconds a stream may stall",
        0.1,
        3600.0,
        hint="seconds",
    ),
    Setting(
        "request_timeout",
        "Request timeout",
        "float",
        "server",
        "request_timeout",
        "--request-timeout",
        "seconds for a whole request",
        0.1,
        86400.0,
        hint="seconds",
    ),
    Setting(
        "give_up_after",
        "Give up after",
        "float",
        "server",
        "give_up_after",
        "--give-up-after",
        "seconds every server may be unreachable before the job stops, resumable "
        "(0: wait for ever)",
        0.0,
        31_536_000.0,
        hint="seconds",
    ),
    Setting(
        "stream",
        "Stream",
        "bool",
        "server",
        "stream",
        "--no-stream",
        "ask for whole answers instead of streams",
    ),
    # A provider's Batch API: the job's servers' /files and /batches endpoints.
    Setting(
        "batch_api",
        "Batch API",
        "bool",
        "run",
        "batch_api",
        "--batch-api",
        "send the prompts as batches through the server's Batch API (/v1/files and "
        "/v1/batches: OpenAI, Azure, Groq, a LiteLLM proxy): about half the price, "
        "answered within the provider's 24-hour window",
    ),
    Setting(
        "batch_max_lines",
        "Batch lines",
        "int",
        "run",
        "batch_max_lines",
        "--batch-max-lines",
        "lines in one batch file at most",
        1,
        1_000_000,
        hint="lines a file",
    ),
    Setting(
        "batch_max_mb",
        "Batch file MB",
        "float",
        "run",
        "batch_max_mb",
        "--batch-max-mb",
        "megabytes (10^6 bytes) in one batch file at most",
        0.001,
        10_000.0,
        hint="MB a file",
    ),
    Setting(
        "batch_files",
        "Batches at once",
        "int",
        "run",
        "batch_files",
        "--batch-files",
        "batches in flight at the provider at once (each counts against its enqueued-token quota)",
        1,
        1000,
        hint="batches",
    ),
    Setting(
        "batch_poll",
        "Batch poll",
        "float",
        "run",
        "batch_poll",
        "--batch-poll",
        "seconds before a batch is first asked how it goes; each wait after is 1.5 times the last",
        0.01,
        86400.0,
        hint="seconds",
    ),
    Setting(
        "batch_poll_most",
        "Batch poll at most",
        "float",
        "run",
        "batch_poll_most",
        "--batch-poll-most",
        "the longest wait between two polls of a batch",
        0.01,
        86400.0,
        hint="seconds",
    ),
    Setting(
        "batch_keep_files",
        "Keep batch files",
        "bool",
        "run",
        "batch_keep_files",
        "--batch-keep-files",
        "keep the uploaded and result files at the provider (default: each batch's files "
        "are deleted there once its answers are stored)",
    ),
    Setting(
        "batch_discount",
        "Batch price",
        "float",
        "run",
        "batch_discount",
        "--batch-discount",
        "what the Batch API charges, as a share of the prices given (--price-in, "
        "--price-out): 0.5 at OpenAI, 0.75 at Groq",
        0.0,
        1.0,
        hint="share of the price",
    ),
    # How the model generates.
    Setting(
        "max_tokens",
        "Max tokens",
        "int",
        "generation",
        "max_tokens",
        "--max-tokens",
        "the most tokens an answer may have",
        1,
        hint="per response",
    ),
    Setting(
        "temperature",
        "Temperature",
        "float",
        "generation",
        "temperature",
        "--temperature",
        "temperature; 0 is greedy",
        0.0,
        hint="0 = greedy",
    ),
    Setting("top_p", "Top-p", "float", "generation", "top_p", "--top-p", "top-p", 0.0, 1.0),
    Setting(
        "seed",
        "Seed",
        "int",
        "generation",
        "seed",
        "--seed",
        "the sampling seed",
        0,
        2**32 - 1,
        blank_is_none=True,
        hint="random",
    ),
    Setting(
        "stop",
        "Stop",
        "stop",
        "generation",
        "stop",
        "--stop",
        "a stop string (repeatable); in a job file, a string or a list of them",
    ),
    Setting(
        "system_prompt",
        "System prompt",
        "text",
        "generation",
        "system",
        "--system",
        "system prompt for every prompt without its own",
    ),
    # Models that think before they answer.
    Setting(
        "reasoning",
        "Reasoning",
        "text",
        "generation",
        "reasoning",
        "--reasoning",
        "auto | on | off: whether a model that can think before it answers does (auto: "
        "the model's own default); the thought is kept apart from the answer",
        words=REASONING_MODES,
    ),
    Setting(
        "reasoning_budget",
        "Reasoning budget",
        "int",
        "generation",
        "reasoning_budget",
        "--reasoning-budget",
        "the most tokens a thought may have: past it the thought is closed and the "
        "answer follows (inside max tokens)",
        0,
        blank_is_none=True,
        hint="no limit",
    ),
    Setting(
        "reasoning_effort",
        "Reasoning effort",
        "text",
        "generation",
        "reasoning_effort",
        "--reasoning-effort",
        "low | medium | high: how hard gpt-oss thinks (and servers that take it)",
        words=("", *EFFORTS),
    ),
    # What every answer must be.
    Setting(
        "schema",
        "Schema",
        "schema",
        "generation",
        "schema",
        "--schema",
        "what every answer must be: a JSON Schema (a .json file or inline JSON) or fields "
        "like 'sentiment: positive|negative|neutral, stars: int 1..5, headline: str'",
    ),
    Setting(
        "choices",
        "Choices",
        "choices",
        "generation",
        "choices",
        "--choices",
        "every answer is one of these labels, as plain text: positive,negative,neutral",
    ),
    Setting(
        "schema_prompt",
        "Schema in prompt",
        "bool",
        "generation",
        "schema_prompt",
        "--no-schema-prompt",
        "do not describe the schema's fields to the model in the system prompt",
    ),
    # How the engine runs the job.
    Setting(
        "error_strategy",
        "Error strategy",
        "text",
        "run",
        "error_strategy",
        "--error-strategy",
        "continue | stop | threshold:N (default: continue)",
    ),
    Setting(
        "retries",
        "Retries",
        "int",
        "run",
        "retries",
        "--retries",
        "retries per failed prompt",
        0,
        100,
        hint="per prompt",
    ),
    Setting(
        "invalid_retries",
        "Invalid retries",
        "int",
        "run",
        "invalid_retries",
        "--invalid-retries",
        "runs again, with a new seed, of an answer that breaks the schema",
        0,
        20,
        hint="per prompt",
    ),
    Setting(
        "repeats",
        "Repeats",
        "int",
        "run",
        "repeats",
        "--repeats",
        "runs of each prompt, each with a seed of its own (needs a temperature above 0)",
        1,
        100,
        hint="runs per prompt",
    ),
    Setting(
        "cache",
        "Cache",
        "text",
        "run",
        "cache",
        "--cache",
        "answers reused across jobs: off | read | write | read-write (default: off; the "
        "file: $TUI_BATCH_CACHE, else cache.db in the data dir)",
    ),
    Setting(
        "retry_backoff",
        "Retry backoff",
        "float",
        "run",
        "retry_backoff",
        "--retry-backoff",
        "seconds before the first retry, doubled for each next one",
        0.0,
        3600.0,
        hint="seconds",
    ),
    Setting(
        "checkpoint_every",
        "Checkpoint every",
        "int",
        "run",
        "checkpoint_every",
        "--checkpoint-every",
        "save the checkpoint every N results",
        1,
        hint="results",
    ),
    Setting(
        "price_in",
        "Price in",
        "float",
        "run",
        "price_in",
        "--price-in",
        "what a million input tokens cost; with --price-out, the stats show the cost",
        0.0,
        hint="per million input tokens",
    ),
    Setting(
        "price_out",
        "Price out",
        "float",
        "run",
        "price_out",
        "--price-out",
        "what a million output tokens cost",
        0.0,
        hint="per million output tokens",
    ),
    Setting(
        "max_cost",
        "Max cost",
        "float",
        "run",
        "max_cost",
        "--max-cost",
        "stop the job (resumable) before a prompt that could take its cost past this "
        "(needs --price-in and --price-out)",
        0.0,
        blank_is_none=True,
        hint="in the prices' currency",
    ),
    Setting(
        "max_total_tokens",
        "Max total tokens",
        "int",
        "run",
        "max_total_tokens",
        "--max-total-tokens",
        "stop the job (resumable) before a prompt that could take its input and output "
        "tokens together past this",
        1,
        blank_is_none=True,
        hint="input and output",
    ),
    # How answers are scored against expected ones.
    Setting(
        "expect",
        "Expect",
        "text",
        "score",
        "expect",
        "--expect",
        "the column (of the data file, or key of the prompts file) holding each record's "
        "expected answer; its answers are then scored",
    ),
    Setting(
        "score",
        "Score",
        "text",
        "score",
        "method",
        "--score",
        "how an answer is scored: exact (trimmed, case-folded; the default), contains, "
        "regex, number (within --tolerance), json-field FIELD, fields (each field of the "
        "expected JSON object)",
    ),
    Setting(
        "tolerance",
        "Tolerance",
        "float",
        "score",
        "tolerance",
        "--tolerance",
        "how far a number may be from the expected one and still be right",
        0.0,
        hint="number, json-field",
    ),
    # Where the results go.
    Setting(
        "out",
        "Results file",
        "path",
        "output",
        "file",
        "--out",
        "results file (default: in the data dir)",
    ),
    Setting(
        "format",
        "Results format",
        "text",
        "output",
        "format",
        "--format",
        "results format (default: from --out's extension, else json)",
    ),
)

# Numbers that are not settings of a run, but typed in job setup the same way.
THRESHOLD = Setting(
    "threshold",
    "Threshold N",
    "int",
    "run",
    "threshold",
    None,
    "failures that stop a threshold:N job",
    1,
    hint="for threshold",
)

# The Batch API's settings: a job file keeps them in [run], but they are settings of the
# job's servers (`ServerSettings`), given only with a server.
BATCH_KEYS = tuple(s.name for s in SETTINGS if s.table == "run" and s.name.startswith("batch_"))

BY_NAME: dict[str, Setting] = {s.name: s for s in (*SETTINGS, THRESHOLD)}
TABLES = tuple(dict.fromkeys(s.table for s in SETTINGS))
