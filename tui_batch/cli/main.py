"""The `tui-batch` command: thin over the core. Parses, calls the engine, prints."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from tui_batch.backends.job_checks import probed_schema
from tui_batch.cli.arguments import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    build_parser,
    flag_values,
    server_flags_given,
    server_settings,
)
from tui_batch.cli.batches_command import command_batches
from tui_batch.cli.cache_command import command_cache
from tui_batch.cli.job_run import apply_check, checked_servers, run_job
from tui_batch.cli.reports import (
    command_checkpoints,
    command_compare,
    command_export,
    command_merge,
    command_score,
    command_stats,
)
from tui_batch.cli.run_input import (
    check_template_files,
    open_input,
    print_warnings,
    run_requests,
    save_job,
    warn_long_prompts,
)
from tui_batch.cli.terminal import cancel_on_signals, print_table
from tui_batch.core.backend import Backend
from tui_batch.core.budget import Budget
from tui_batch.core.dry_run import DEFAULT_SAMPLE, dry_run
from tui_batch.core.errors import (
    SettingsError,
    TuiBatchError,
)
from tui_batch.core.export import check_output_path, check_results_folder
from tui_batch.core.jobfile import JOB_FILE_SUFFIX
from tui_batch.core.jobs import BatchJob, JobStatus
from tui_batch.core.paths import exists
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.prompt import Prompt
from tui_batch.core.prompt_stream import PromptStream, reopen_stream
from tui_batch.core.prompts import SUPPORTED_EXTENSIONS
from tui_batch.core.run_input import RunInput
from tui_batch.core.run_spec import LOCAL_KEYS, RunSpec
from tui_batch.core.servers import (
    server_settings_from_text,
)
from tui_batch.core.settings import settings_from_text
from tui_batch.core.stored import result_counts
from tui_batch.core.text import escape_controls, escape_json, has_surrogates, one_line
from tui_batch.models.gguf import format_count

COMMANDS = (
    "run",
    "resume",
    "checkpoints",
    "batches",
    "export",
    "score",
    "stats",
    "compare",
    "cache",
    "models",
)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Bytes that are not UTF-8 reach Python as lone surrogates, which no file we write
    # (a checkpoint, a job file, an export) can hold: said here, once, for every option.
    broken = next((a for a in argv if has_surrogates(a)), None)
    if broken is not None:
        print(
            f"tui-batch: error: '{escape_controls(broken)[:80]}' holds bytes that are not "
            "UTF-8; give it as UTF-8 text",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        dashboard = _dashboard_arguments(argv)
    except SettingsError as exc:
        print(f"tui-batch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if dashboard is not None:
        return open_dashboard(*dashboard)
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": command_run,
        "resume": command_resume,
        "checkpoints": command_checkpoints,
        "batches": command_batches,
        "export": command_export,
        "score": command_score,
        "merge": command_merge,
        "stats": command_stats,
        "compare": command_compare,
        "cache": command_cache,
        "models": command_models,
    }
    try:
        return handlers[args.command](args)
    except TuiBatchError as exc:
        # Errors quote files, records and servers' words: data, shown escaped.
        print(f"tui-batch: error: {escape_controls(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ntui-batch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `tui-batch compare A B --csv | head`: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _looks_like_prompts_file(arg: str) -> bool:
    if arg in COMMANDS or arg.startswith("-"):
        return False
    suffix = Path(arg).suffix.lower()
    return exists(arg) or suffix in (*SUPPORTED_EXTENSIONS, JOB_FILE_SUFFIX)


def _dashboard_arguments(argv: list[str]) -> tuple[Path | None, int] | None:
    """`tui-batch [--max-models N] [PROMPTS|JOB.toml]`: the dashboard's file and how many
    models may be loaded at once; None where `argv` is a command."""
    rest, max_models = list(argv), "1"
    if argv and argv[0] not in COMMANDS and argv[-1] == "--max-models":
        raise SettingsError("--max-models: give a number of models, as --max-models 2")
    for position, arg in enumerate(argv):
        if arg == "--max-models" and position + 1 < len(argv):
            max_models = argv[position + 1]
            del rest[position : position + 2]
            break
        if arg.startswith("--max-models="):
            max_models = arg.partition("=")[2]
            del rest[position]
            break
    if len(rest) > 1 or (rest and not _looks_like_prompts_file(rest[0])):
        return None
    if not max_models.strip().isdigit() or not 1 <= int(max_models) <= 1000:
        raise SettingsError(
            "--max-models: expected a whole number of models from 1, got "
            f"{escape_controls(max_models)[:40]!r}"
        )
    return (Path(rest[0]) if rest else None), int(max_models)


def open_dashboard(prompts_file: Path | None, max_models: int = 1) -> int:
    """`tui-batch [--max-models N] [PROMPTS|JOB.toml]`: the full-screen app, with the
    file loaded into job setup; jobs started there run at once, `max_models` local
    models loaded at most."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print(
            "tui-batch: error: the dashboard needs a terminal; without one, use "
            "tui-batch run PROMPTS (see tui-batch --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from tui_batch.ui.app import TuiBatchApp

    app = TuiBatchApp(prompts_file, max_models=max_models)
    app.stop_signals.end_process = True
    app.run()
    if app.return_code == 128 + getattr(signal, "SIGHUP", -128):
        # The terminal is gone: what is left to say has nowhere to go, and a write to
        # it would fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (sys.stdout.fileno(), sys.stderr.fileno()):
            os.dup2(devnull, fd)
    for entry in app.queue.jobs:
        job = entry.run.job if entry.run is not None else None
        if job is not None and job.status is JobStatus.CANCELLED:
            # Stopped by quitting: say how to go on, on the terminal it leaves.
            print(
                f"Job {job.job_id} stopped: {job.done}/{job.total_prompts} done and saved. "
                f"Resume with: tui-batch resume {job.job_id}",
                file=sys.stderr,
            )
    return app.return_code or EXIT_OK  # 128 + the signal when SIGTERM or SIGHUP stopped it


def command_run(args: argparse.Namespace) -> int:
    from tui_batch.backends.factory import length_check, llama_backend
    from tui_batch.models.catalog import resolve_model

    requests = run_requests(args)
    request = requests[0]
    if args.save_job is not None:
        return save_job(request, args.save_job)
    if len(requests) > 1 or request.matrix:
        from tui_batch.cli.group_run import run_group

        return run_group(requests, args)
    spec = request.spec
    if spec.name is None and request.job_file is not None:
        spec = replace(spec, name=request.job_file.stem)  # a job file names its job
    processor = BatchProcessor()
    if spec.output:  # first: an output that would replace an input says so, whatever its name
        check_output_path(spec.output, protected=[*request.inputs, processor.checkpoint_dir])
        check_results_folder(spec.output)
    # The input is read a chunk at a time: the first is checked (and its mistakes said)
    # before a model loads; the rest is read in as the job runs.
    stream, run_input = open_input(request)
    processor.check_job_from(run_input, spec)  # before a model loads, not after
    spec = run_input.settled(spec)
    if args.dry_run_sample is not None and not args.dry_run:
        raise SettingsError("--dry-run-sample N measures a dry run: add --dry-run")
    if not args.dry_run:  # a dry run makes nothing
        processor.store.check_writable()
    # Stop signals are ours from here: a Ctrl+C while the model loads is not lost.
    with cancel_on_signals(sys.stderr) as signals:
        if spec.server is not None:
            return _run_on_servers(processor, stream, run_input, spec, signals, args)
        model = resolve_model(spec.model)
        settings = spec.generation
        warn_long_prompts(model.path, run_input, settings)
        backend = llama_backend(model.path, settings)
        if args.dry_run:
            with backend:
                check = length_check(
                    model.path, settings.n_ctx, settings.system_prompt, settings.schema_note
                )
                return print_dry_run(
                    stream, run_input, spec, model.id, backend, check.tokens, args, signals
                )
        # The model is loaded before the job is made, so a model that fails changes
        # nothing; with answers to serve from the cache, only if a prompt is left.
        if not spec.options.cache_reads:
            print(f"Loading {one_line(model.id)}...", file=sys.stderr, flush=True)
            backend.open(settings)
        with backend:
            if signals.cancel.is_set():
                return _stopped_before_start(signals)
            job = processor.create_streamed_job(
                model.id, stream, run_input.prompts, spec, model_path=str(model.path)
            )
            return run_job(processor, job, backend, signals, False, stream=stream)


def print_dry_run(
    stream: PromptStream,
    run_input: RunInput,
    spec: RunSpec,
    model_id: str,
    backend: Backend,
    count: Callable[[Sequence[Prompt]], list[int]] | None,
    args: argparse.Namespace,
    signals: cancel_on_signals,
) -> int:
    """`run --dry-run`: the run's figures on stdout; nothing made (Ctrl+C stops it)."""
    sample = DEFAULT_SAMPLE if args.dry_run_sample is None else args.dry_run_sample
    print(f"Reading {one_line(str(stream.source_file))}...", file=sys.stderr, flush=True)
    try:
        figures = dry_run(
            stream,
            run_input.prompts,
            spec,
            model_id,
            backend,
            count,
            sample,
            lambda text: print_warnings("cache", [text]),
            signals.cancel,
        )
    except TuiBatchError:
        if not signals.cancel.is_set():
            raise
        print("Stopped: the dry run made nothing.", file=sys.stderr)
        return signals.exit_status
    print(f"Dry run of {one_line(model_id)}: nothing was made")
    for line in figures.lines():
        print(line)
    return EXIT_OK


def _stopped_before_start(signals: cancel_on_signals) -> int:
    print("Stopped before the job started: nothing was made.", file=sys.stderr)
    return signals.exit_status


def _run_on_servers(
    processor: BatchProcessor,
    stream: PromptStream,
    run_input: RunInput,
    spec: RunSpec,
    signals: cancel_on_signals,
    args: argparse.Namespace,
) -> int:
    """Check every server answers and serves the model, then make and run the job."""
    from tui_batch.backends.factory import remote_backend

    server, model = checked_servers(spec)
    if signals.cancel.is_set():
        return _stopped_before_start(signals)
    with remote_backend(server, model) as backend:
        if args.dry_run:
            return print_dry_run(stream, run_input, spec, model, backend, None, args, signals)
        job = processor.create_streamed_job(model, stream, run_input.prompts, spec, server=server)
        return run_job(processor, job, backend, signals, False, stream=stream)


def command_resume(args: argparse.Namespace) -> int:
    from tui_batch.backends.factory import backend_for_job
    from tui_batch.cli.group_run import group_named, resume_group

    processor = BatchProcessor()
    if group := group_named(processor, args.job_id):
        return resume_group(processor, args.job_id, group, args)
    # The lock first: a second resume of a running job is refused before a model loads.
    with processor.store.lock(args.job_id) as lock:
        job = processor.open_job(args.job_id)
        counts = result_counts(job.checkpoint_file or "")
        failed = counts.results - counts.succeeded
        finished = (
            job.reading is None
            and counts.results >= job.total_prompts
            and not (args.retry_failed and failed)
        )
        out = processor.results_path(job)
        if finished and job.status is JobStatus.COMPLETED and out.exists():
            print(
                f"Job {job.job_id} is already finished: {counts.results}/{job.total_prompts} "
                f"done, {failed} failed. Nothing to run. Results: {one_line(str(out))}",
                file=sys.stderr,
            )
            return EXIT_FAILED if failed else EXIT_OK
        if job.template is not None and not finished and job.reading is None:
            check_template_files(job, args.force)
        # A job stopped while its input was read in reads on from where it stopped.
        stream = reopen_stream(job) if job.reading is not None else None
        if args.max_cost is not None or args.max_total_tokens is not None:
            job.budget = raised_budget(job, args.max_cost, args.max_total_tokens)
        local = {k: v for k, v in flag_values(args).items() if k in LOCAL_KEYS}
        job.settings, _ = settings_from_text(local, base=job.settings)
        if job.server is None and server_flags_given(args):
            raise SettingsError(f"Job {job.job_id} runs on a local model; it takes no --server")
        if job.server is not None:
            job.server = server_settings(args, job.server)
        processor.store.check_writable(job.job_id)
        if job.server is not None and not finished:
            from tui_batch.backends.factory import check_servers

            check = check_servers(
                job.server, job.model_id, probed_schema(job.settings, job.options)
            )
            job.server = apply_check(check, job.server)
        # Opened by the engine only if a prompt is left: a job killed after its last
        # result is finished without loading a model.
        with (
            cancel_on_signals(sys.stderr) as signals,
            backend_for_job(job, opened=False) as backend,
        ):
            return run_job(processor, job, backend, signals, args.retry_failed, lock, stream)


def raised_budget(job: BatchJob, max_cost: str | None, max_total_tokens: str | None) -> Budget:
    """The job's budget with what resume was given in place (a cost needs the job's prices)."""
    budget = (job.budget or Budget()).with_values(max_cost, max_total_tokens)
    assert budget is not None
    if budget.max_cost is not None and job.prices is None:
        raise SettingsError(
            f"Job {job.job_id} has no prices: --max-cost needs what tokens cost; give "
            "--max-total-tokens instead"
        )
    return budget


def command_models(args: argparse.Namespace) -> int:
    if args.server:
        return _server_models(args)
    if args.api_key_env:
        raise SettingsError("--api-key-env applies to servers only; add --server URL")
    from tui_batch.models.catalog import discover_models, no_models_help

    models = discover_models()
    if args.json:
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return EXIT_OK
    if not models:
        print("\n".join(no_models_help()))
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


def _server_models(args: argparse.Namespace) -> int:
    from tui_batch.backends.factory import check_servers

    given = {"api_key_env": args.api_key_env} if args.api_key_env else {}
    check = check_servers(server_settings_from_text(args.server, given))
    if args.json:
        listing = [
            {"server": url, "models": names, "interrupts_requests": url in check.interrupting}
            for url, names in check.models.items()
        ]
        print(escape_json(json.dumps(listing, indent=2, ensure_ascii=False)))
    else:
        rows = [("SERVER", "MODEL")]
        for url, names in check.models.items():
            rows.extend((url, name) for name in names or ["(the server lists no models)"])
        print_table(rows)
    for warning in check.warnings():
        print(f"tui-batch: warning: {one_line(warning)}", file=sys.stderr)
    return EXIT_OK
