"""The engine alone at 1,000 / 10,000 / 100,000 prompts, on an instant backend.

Prints, for each size: wall time, time per result, peak memory (RSS of a fresh
process), checkpoint size and time to load the checkpoint back (resume), then the
time per result at the largest size divided by that at the smallest.

    python benchmarks/scale.py [--sizes 1000 10000 100000] [--checkpoint-every 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(size: int, checkpoint_every: int) -> dict[str, float]:
    """Run in a child process so each size's peak memory is its own."""
    from tui_batch.core.processor import BatchProcessor

    directory = Path(tempfile.mkdtemp(prefix="tui-batch-scale-"))
    processor = BatchProcessor(directory)
    prompts = [f"Prompt number {i}: explain topic {i % 97}." for i in range(size)]
    start = time.perf_counter()
    job = processor.create_job("instant", prompts, checkpoint_every=checkpoint_every)
    created = time.perf_counter()
    results = processor.process_batch(job, lambda p: {"response_text": p[::-1], "tokens_output": 8})
    finished = time.perf_counter()
    assert len(results) == size and job.completed == size
    path = Path(job.checkpoint_file)
    size_bytes = sum(p.stat().st_size for p in directory.iterdir() if p.name.startswith(path.name))
    load_start = time.perf_counter()
    _, loaded = processor.load_checkpoint(path)
    load_time = time.perf_counter() - load_start
    assert len(loaded) == size
    return {
        "prompts": size,
        "create_s": created - start,
        "run_s": finished - created,
        "per_result_us": 1e6 * (finished - created) / size,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checkpoint_mib": size_bytes / 2**20,
        "resume_load_s": load_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.checkpoint_every)))
        return
    rows = []
    for size in args.sizes:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(size),
                "--checkpoint-every",
                str(args.checkpoint_every),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=os.environ,
        ).stdout
        rows.append(json.loads(out))
    print(f"checkpoint every {args.checkpoint_every} results, instant backend")
    print(
        f"{'prompts':>9} {'create':>8} {'run':>8} {'per result':>11} {'peak RSS':>9} "
        f"{'checkpoint':>11} {'resume load':>12}"
    )
    for r in rows:
        print(
            f"{r['prompts']:>9,} {r['create_s']:>7.2f}s {r['run_s']:>7.2f}s "
            f"{r['per_result_us']:>9.1f}us {r['peak_rss_mib']:>7.0f}MiB "
            f"{r['checkpoint_mib']:>9.1f}MiB {r['resume_load_s']:>11.2f}s"
        )
    ratio = rows[-1]["per_result_us"] / rows[0]["per_result_us"]
    print(
        f"time per result at {rows[-1]['prompts']:,} / at {rows[0]['prompts']:,}: {ratio:.2f} "
        "(must be at most 1.5)"
    )


if __name__ == "__main__":
    main()
