"""The answer cache, measured in one run (each part in a fresh data dir and cache file).

1. The 200-review example job (examples/review_labels.toml: a label, stars and a
   headline for each review, a schema enforced) run twice with `--cache read-write`, as
   `tui-batch run` in a subprocess: both wall times (model load included), the ratio, and
   how many prompts the second run sent to the model (asked: 0, in <= 5 s).
2. The same job with 20 records' review text changed: the misses (asked: exactly 20).
3. 100,000 cached prompts: a job of 100,000 reviews whose answers are all in the cache
   (written straight to it, keyed as a run keys them), run with `tui-batch run --cache
   read`: its wall time end to end (asked: < 10 s), the lookup alone per prompt (asked:
   < 50 µs), and the file's bytes per answer at 25,000, 50,000 and 100,000 answers
   (linear growth: about the same figure each time).

    python benchmarks/cache.py [--threads 1] [--skip-model] [--prompts 100000]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tui_batch.backends.factory import llama_backend
from tui_batch.core.cache.answers import AnswerCache, CachedAnswer, file_size
from tui_batch.core.cache.job_cache import JobCache
from tui_batch.core.processor import BatchProcessor
from tui_batch.core.run_spec import RunSpec
from tui_batch.models.catalog import demo_model_path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
CHOICES = "positive,negative,neutral"


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tui_batch", "run", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"tui-batch run failed:\n{done.stderr[-2000:]}")
    return took, done.stderr


def to_run(stderr: str) -> str:
    """What the run's cache line says: `N of M answers served ...; K to run`."""
    line = next((x for x in stderr.splitlines() if "answers served from" in x), "")
    return line.split("cache: ", 1)[-1]


def example_job(folder: Path, threads: int) -> None:
    copy = folder / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns("output"))
    env = {"TUI_BATCH_DATA_DIR": str(folder / "data"), "TUI_BATCH_CACHE": str(folder / "c.db")}
    job = [str(copy / "review_labels.toml"), "--cache", "read-write", "--threads", str(threads)]
    first, _ = run_cli(job, env)
    second, said = run_cli(job, env)
    print("1. The 200-review example job (review_labels.toml) run twice, --cache read-write")
    print(f"   first run   {first:7.2f} s  (every answer from the model)")
    print(f"   second run  {second:7.2f} s  ({to_run(said)})")
    print(f"   ratio       {first / second:7.1f}x faster; asked: 0 model calls in <= 5 s")
    reviews = copy / "reviews.csv"
    rows = list(csv.reader(reviews.open(encoding="utf-8")))
    for row in rows[1:21]:
        row[2] = f"{row[2]} (Edited.)"
    with reviews.open("w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows(rows)
    third, said = run_cli(job, env)
    print("2. The same job with 20 records' review text changed")
    print(f"   run         {third:7.2f} s  ({to_run(said)}); asked: exactly 20 misses")


def scale(folder: Path, count: int) -> None:
    model = demo_model_path()
    assert model is not None
    prompts_file = folder / "reviews.txt"
    texts = [
        f"Review {i}: it arrived on time and works as described, mostly." for i in range(count)
    ]
    prompts_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    cache_file = folder / "big.db"
    os.environ["TUI_BATCH_DATA_DIR"] = str(folder / "data")
    processor = BatchProcessor()
    # The job the command line makes of these flags, to key its prompts as a run does.
    spec = RunSpec.from_values({"prompts": str(prompts_file), "choices": CHOICES, "cache": "read"})
    job = processor.create_job("demo", texts, spec=spec)
    cache = JobCache.open(job, llama_backend(model, spec.generation), sys.exit, cache_file)
    assert cache is not None
    started = time.perf_counter()
    keys = [cache.key(i) for i in range(count)]
    keying = time.perf_counter() - started
    cache.close()
    answer = CachedAnswer("positive", "positive", "stop", 60, 2, None, 0.4, job.job_id)
    sizes = []
    with AnswerCache(cache_file) as store:
        for start, end in ((0, count // 4), (count // 4, count // 2), (count // 2, count)):
            store.put_many((k, "demo", answer) for k in keys[start:end] if k is not None)
            store.compact()
            sizes.append((end, file_size(cache_file)))
        started = time.perf_counter()
        found = store.get_many([k for k in keys if k is not None])
        lookup = time.perf_counter() - started
    assert len(found) == count
    took, said = run_cli(
        [str(prompts_file), "--choices", CHOICES, "--cache", "read", "--threads", "1"],
        {"TUI_BATCH_DATA_DIR": str(folder / "data"), "TUI_BATCH_CACHE": str(cache_file)},
    )
    print(f"3. {count:,} cached prompts")
    print(f"   tui-batch run, end to end   {took:7.2f} s  ({to_run(said)}); asked: < 10 s")
    print(f"   lookup alone                {lookup / count * 1e6:7.1f} µs a prompt; asked: < 50")
    print(f"   keying alone                {keying / count * 1e6:7.1f} µs a prompt "
          "(the chat template, then SHA-256)")  # fmt: skip
    for entries, size in sizes:
        print(f"   file at {entries:>7,} answers   {size / entries:7.1f} bytes an answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--skip-model", action="store_true", help="part 3 only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_model:
            example_job(Path(folder) / "example", args.threads)
        scale(Path(folder), args.prompts)


if __name__ == "__main__":
    main()
