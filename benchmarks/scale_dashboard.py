"""The dashboard on a job of millions of results: how long its results screen takes to
show the first page (and to jump to the last row), how long its stats screen takes to
fill, and the process's peak RSS. Run it on a job `scale_stream.py --child` made (or any
finished job), with the data folder that holds it:

    TUI_BATCH_DATA_DIR=/path/to/data python benchmarks/scale_dashboard.py JOB_ID
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job_id")
    asyncio.run(measure(parser.parse_args().job_id))


if __name__ == "__main__":
    main()
