"""How long a job's figures and a comparison of two jobs take at 100,000 results, and
what loading a job into Python would cost instead (the baseline the SQL avoids).

Writes one checkpoint of `--results` finished prompts (a remote-like job: two servers, an
attempt log on every tenth prompt, 3% failed with six kinds of message, times spread over
an hour), then, alternating, best of `--repeats`:
  (a) `CheckpointStore.load`: every prompt and result read into Python objects,
  (b) `job_stats`: every figure, SQL over the checkpoint,
and prints both, their ratio, and the process's peak RSS. Then a second job over the same
prompts, and (c) a comparison of the two: matched, counted, and its first page of 50
rows, in prompt order and sorted by the gap in answer length.

    python benchmarks/stats.py [--results 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tui_batch.core.compare import Comparison
from tui_batch.core.jobs import Attempt, BatchResult
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.stats import Prices, job_stats

ERRORS = [
    "HTTP 429: rate limited, retry after {n}s",
    "timeout: first token after {n}s",
    "Prompt is {n} tokens but the context holds 2048",
    "connection refused (127.0.0.1:{n})",
    "HTTP 500: internal error req_{n}",
    "stream stalled for {n}s",
]


def write_job(directory: Path, count: int, seed: int = 0, done: float = 1.0) -> Path:
    """A checkpoint of `count` prompts, the first `done` of them answered."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    processor = BatchProcessor(directory)
    job = processor.create_job(
        "bench", [f"Prompt {i}: explain topic {i % 97}." for i in range(count)]
    )
    results = []
    for i in range(int(count * done)):
        ok = rng.random() > 0.03
        begun = start + timedelta(seconds=i * 3600 / count)
        duration = rng.uniform(0.2, 9.0)
        endpoint = f"http://127.0.0.1:800{i % 2}/v1"
        log = []
        if i % 10 == 0:
            log = [
                Attempt(endpoint, 429, "HTTP 429", latency=0.1),
                Attempt(endpoint, 200, ttft=0.3),
            ]
        results.append(
            BatchResult(
                i,
                "",
                "answer " * rng.randint(1, 40),
                tokens_input=rng.randint(10, 400),
                tokens_output=rng.randint(1, 256),
                duration=duration,
                success=ok,
                error_message=None if ok else rng.choice(ERRORS).format(n=rng.randint(1, 9999)),
                attempts=1 + (i % 10 == 0),
                started_at=begun.isoformat(timespec="seconds"),
                completed_at=(begun + timedelta(seconds=duration)).isoformat(timespec="seconds"),
                endpoint=endpoint,
                attempt_log=log,
                ttft=rng.uniform(0.05, 1.0),
            )  # fmt: skip
        )
    processor.save_checkpoint(job, results)
    return Path(job.checkpoint_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="tui-batch-stats-"))
    path = write_job(directory, args.results)
    store = BatchProcessor(directory).store
    best = {"load": float("inf"), "stats": float("inf")}
    for _ in range(args.repeats):
        for name, run in (
            ("load", lambda: store.load(path)),
            ("stats", lambda: job_stats(path, Prices(0.15, 0.6))),
        ):
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    figures = job_stats(path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.results:,} results, best of {args.repeats}")
    print(f"(a) load the job into Python      {best['load']:7.3f} s")
    print(f"(b) job_stats (SQL)               {best['stats']:7.3f} s")
    print(f"(a) / (b): {best['load'] / best['stats']:.1f}; peak RSS {peak:.0f} MiB")
    print(
        f"checked: {figures.completed:,} succeeded, {figures.failed:,} failed in "
        f"{len(figures.failures)} groups, latency p50 {figures.latency.p50:.2f} s"
    )
    other = write_job(directory, args.results, seed=1)
    timings = {"index": float("inf"), "length": float("inf")}
    for _ in range(args.repeats):
        for order in timings:
            start = time.perf_counter()
            with Comparison([path, other]) as comparison:
                summary = comparison.summary()
                page = comparison.rows(order, limit=50)
            timings[order] = min(timings[order], time.perf_counter() - start)
    print(
        f"(c) compare two jobs: first page in prompt order {timings['index']:.3f} s, "
        f"by length gap {timings['length']:.3f} s ({summary.rows:,} rows, "
        f"{summary.states.get('identical', 0):,} identical, {len(page)} on the page)"
    )


if __name__ == "__main__":
    main()
