"""Scores at scale, and repeats on the demo model, each against its baseline in one run.

1. A job of `--results` results (default 100,000) labelling with 5 choices against an
   expected column: `tui-batch score` of it (every result scored again and saved), its
   stats with accuracy and the 5-label confusion matrix, and the first page of the
   comparison of two such jobs with regressions first. Best of three each.
2. `--repeats 5` of `--prompts` (default 200) example reviews on the demo model at
   --parallel 16, temperature 0.7, against five jobs of the same prompts run one after
   the other, the k-th with the seed the k-th repeat gets (so both sides write the same
   answers, up to batching), the model loaded once for all of them (a stricter baseline
   than five `tui-batch run`s, which load it five times). Same threads on both sides.
   Prints both times, the tokens, and the ratio.

    python benchmarks/scores.py [--results 100000] [--prompts 200] [--threads 1]
    python benchmarks/scores.py --skip-model      # part 1 only
    python benchmarks/scores.py --skip-scale --model tiny --gpu-layers -1
        # part 2 on a GPU (benchmarks/gpu/decode_limit.sh)
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from structured import example_prompts

from tui_batch.backends.llama.parallel import ParallelLlamaBackend
from tui_batch.core.compare import Comparison
from tui_batch.core.jobs import BatchResult, GenerationSettings, Prompt
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.run_spec import RunSpec
from tui_batch.core.scoring.methods import Scoring
from tui_batch.core.stats import job_stats
from tui_batch.models.catalog import demo_model_path

LABELS = ["very positive", "positive", "neutral", "negative", "very negative"]


def best_of(runs: int, work) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        value = work()
        best = min(best, time.perf_counter() - started)
    return best, value


def labelled_job(processor: BatchProcessor, job_id: str, count: int, accuracy: float, seed: int):
    """A finished job of `count` labels against an expected column, right `accuracy`
    of the time (written as a run would, in checkpoints of 5,000)."""
    rng = random.Random(seed)
    expected = [LABELS[i % 5] for i in range(count)]
    spec = RunSpec.from_values({"choices": ",".join(LABELS), "expect": "label", "score": "exact"})
    prompts = [
        Prompt(f"Review {i}: it was fine, mostly.", custom_id=f"r{i}", variables={"label": e})
        for i, e in enumerate(expected)
    ]
    job = processor.create_job("demo", prompts, job_id=job_id, spec=spec)
    scoring = job.scoring
    results = []
    for i, label in enumerate(expected):
        answer = label if rng.random() < accuracy else rng.choice(LABELS)
        score, value = scoring.judge({"label": label}, True, False, answer, answer, None)
        results.append(
            BatchResult(
                i,
                prompts[i].text,
                answer,
                30,
                2,
                0.4,
                output=answer,
                score=score,
                expected=value,
                started_at="2026-01-01T00:00:00+00:00",
                completed_at="2026-01-01T00:00:01+00:00",
            )  # fmt: skip
        )
    for start in range(0, count, 5000):
        processor.save_checkpoint(job, results[start : start + 5000])
    return job


def scale(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        processor = BatchProcessor(Path(folder))
        made = time.perf_counter()
        first = labelled_job(processor, "first", count, 0.8, 1)
        second = labelled_job(processor, "second", count, 0.7, 2)
        print(f"made two jobs of {count:,} results in {time.perf_counter() - made:.1f} s")
        again = Scoring("label", "contains")
        seconds, done = best_of(3, lambda: processor.score_job("first", again))
        print(f"score of {count:,} results: {seconds:.2f} s  ({done.right:,}/{done.scored:,} "
              "right; every score saved)")  # fmt: skip
        seconds, stats = best_of(3, lambda: job_stats(first.checkpoint_file))
        [confusion] = stats.confusions
        print(f"stats with accuracy and a {len(confusion.labels)}-label confusion matrix: "
              f"{seconds:.2f} s  (accuracy {stats.accuracy:.3f}, macro F1 "
              f"{confusion.macro_f1():.3f})")  # fmt: skip

        def first_page():
            with Comparison([first.checkpoint_file, second.checkpoint_file]) as comparison:
                summary = comparison.summary()
                rows = comparison.rows(changed=True, limit=50)
                return summary, rows

        seconds, (summary, rows) = best_of(3, first_page)
        print(f"compare with regressions, first page of 50: {seconds:.2f} s  "
              f"({summary.regressions:,} regressions, {summary.improvements:,} improvements; "
              f"first row a regression: {rows[0].regression})")  # fmt: skip


def repeats(count: int, threads: int, times: int, args) -> None:
    _, prompts = example_prompts(count)
    # The demo model, or (on a GPU) the random-weight 1.1B.
    model = demo_model_path() if args.model == "demo" else args.model
    shared = {"n_threads": threads, "parallel": 16, "n_gpu_layers": args.gpu_layers}
    settings = GenerationSettings(temperature=0.7, seed=1, **shared)
    backend = ParallelLlamaBackend(model, 16)
    backend.open(settings)
    try:
        with tempfile.TemporaryDirectory() as folder:
            processor = BatchProcessor(Path(folder))
            started = time.perf_counter()
            tokens = 0
            for run in range(times):
                alone = GenerationSettings(temperature=0.7, seed=1 + run, **shared)
                job = processor.create_job("demo", prompts, settings=alone)
                tokens += sum(r.tokens_output for r in processor.process_batch(job, backend))
            apart = time.perf_counter() - started
            print(f"five runs one after the other: {apart:.1f} s, {tokens:,} tokens "
                  f"({tokens / apart:.1f} tok/s)")  # fmt: skip
            job = processor.create_job("demo", prompts, settings=settings, repeats=times)
            started = time.perf_counter()
            results = processor.process_batch(job, backend)
            together = time.perf_counter() - started
            tokens = sum(r.tokens_output for r in results)
            print(f"--repeats {times} in one job:          {together:.1f} s, {tokens:,} tokens "
                  f"({tokens / together:.1f} tok/s)")  # fmt: skip
            print(f"ratio: {apart / together:.2f}x faster in one job")
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-scale", action="store_true", help="part 2 only")
    parser.add_argument(
        "--model", default="demo", help="part 2's model: demo, tiny (random-weight 1.1B) or a file"
    )
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench")
    args = parser.parse_args()
    if args.model == "tiny":
        from throughput import write_tiny_model

        args.model = write_tiny_model(args.cache_dir / "random-tinyllama-1.1b-q4_0.gguf")
    if not args.skip_scale:
        scale(args.results)
    if not args.skip_model:
        repeats(args.prompts, args.threads, args.repeats, args)


if __name__ == "__main__":
    main()
