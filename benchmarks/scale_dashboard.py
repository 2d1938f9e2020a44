"""The dashboard on a job of millions of results: how long its results screen takes to
show the first page (and to jump to the last row), how long its stats screen takes to
fill, and the process's peak RSS. Run it on a job `scale_stream.py --child` made (or any
finished job), with the data folder that holds it:

    TUI_BATCH_DATA_DIR=/path/to/data python benchmarks/scale_dashboard.py JOB_ID

With `--start-sizes`, a job started from job setup (ctrl+r) on a prompts file of each
size, run on an instant backend to its end, each in a fresh process: time to the first
result, time per prompt, peak RSS, and the largest size's ratios to the smallest's.

    python benchmarks/scale_dashboard.py --start-sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tui_batch.ui.app import TuiBatchApp
from tui_batch.ui.screens.results import ResultsScreen


async def measure(job_id: str) -> None:
    app = TuiBatchApp()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(1.0)  # the first screen settles

        def filled() -> bool:
            screen = app.screen
            if not isinstance(screen, ResultsScreen) or not screen.is_mounted:
                return False
            return bool(screen.query("#results") and screen.query_one("#results").count)

        start = time.perf_counter()
        app.show_results(job_id)
        while not filled():
            await pilot.pause(0.05)
        rows = app.screen.query_one("#results").count
        print(f"results screen, first page: {time.perf_counter() - start:5.1f}s  rows {rows:,}")
        start = time.perf_counter()
        await pilot.press("G")  # the last row
        await pilot.pause(0.2)
        print(f"results screen, last row:   {time.perf_counter() - start:5.1f}s")
        await pilot.press("escape")
        await pilot.pause(1.0)
        start = time.perf_counter()
        app.show_stats(job_id)
        while getattr(app.screen, "stats", None) is None:
            await pilot.pause(0.1)
        print(f"stats screen:               {time.perf_counter() - start:5.1f}s")
        await pilot.pause(1.0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")


async def start_from_setup(path: Path) -> dict[str, float]:
    """Start a job on `path` from job setup, as a person does, and run it to its end on
    an instant backend (what is measured is the dashboard's path, not a model)."""
    from tui_batch.core.backend import CallableBackend
    from tui_batch.ui.screens.progress import ProgressScreen

    def execute(prompt: str) -> dict[str, object]:
        return {"response_text": prompt[::-1], "tokens_output": 8}

    app = TuiBatchApp(path, backend_factory=lambda job: CallableBackend(execute))
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(1.0)  # the first screen settles
        start = time.perf_counter()
        await pilot.press("ctrl+r")
        while not isinstance(app.screen, ProgressScreen) or app.run_state is None:
            await pilot.pause(0.01)
        run = app.run_state
        while not run.recorded:
            await pilot.pause(0.01)
        first = time.perf_counter() - start
        while not run.finished:
            await pilot.pause(0.1)
        elapsed = time.perf_counter() - start
        prompts = run.job.total_prompts
    return {
        "prompts": prompts,
        "first_result_s": first,
        "per_prompt_us": 1e6 * elapsed / prompts,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def start_sizes(sizes: list[int]) -> None:
    figures = {}
    for size in sizes:
        folder = Path(tempfile.mkdtemp(prefix="tui-batch-dashboard-"))
        path = folder / "prompts.txt"
        with path.open("w") as out:
            for i in range(size):
                out.write(f"Prompt number {i}: explain topic {i % 97}.\n")
        env = {**os.environ, "TUI_BATCH_DATA_DIR": str(folder / "data")}
        done = subprocess.run(
            [sys.executable, __file__, "--start", str(path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        found = figures[size] = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{size:>10,} prompts from setup: first result {found['first_result_s']:.2f}s  "
            f"{found['per_prompt_us']:.1f} us/prompt  peak RSS {found['peak_rss_mib']:.0f} MiB"
        )
    small, large = figures[min(sizes)], figures[max(sizes)]
    print(
        f"{max(sizes):,} against {min(sizes):,}: peak RSS "
        f"x{large['peak_rss_mib'] / small['peak_rss_mib']:.2f}, time per prompt "
        f"x{large['per_prompt_us'] / small['per_prompt_us']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job_id", nargs="?")
    parser.add_argument("--start", type=Path, help=argparse.SUPPRESS)  # one child
    parser.add_argument("--start-sizes", type=int, nargs="+")
    args = parser.parse_args()
    if args.start is not None:
        print(json.dumps(asyncio.run(start_from_setup(args.start))))
    elif args.start_sizes:
        start_sizes(args.start_sizes)
    elif args.job_id:
        asyncio.run(measure(args.job_id))
    else:
        parser.error("give a JOB_ID, or --start-sizes N...")


if __name__ == "__main__":
    main()
