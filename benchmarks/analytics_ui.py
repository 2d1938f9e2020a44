"""The stats and compare screens at 100,000 results, headless (Textual's pilot).

1. A job of `--results` prompts, 90% of them already answered (3% failed, six kinds of
   message), is resumed on a backend that answers a prompt a millisecond, so it runs
   throughout. The stats screen is opened while it runs and timed until its figures are
   on screen; then `--presses` key presses (down / up in the failure groups) are each
   timed from the key being sent until the table has repainted the highlighted row,
   while the screen reads the figures again every second.
2. Two finished jobs of `--results` results over the same prompts are compared: the
   compare screen is timed from being opened until its first page has rendered.

    python benchmarks/analytics_ui.py [--results 100000] [--presses 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import write_job  # noqa: E402
from ui_latency import send_key  # noqa: E402


async def until(condition, what: str, limit: float = 120.0) -> None:
    """Wait, polling often, until `condition()`; a RuntimeError naming `what` if it
    never comes."""
    give_up = time.perf_counter() + limit
    while not condition():
        if time.perf_counter() > give_up:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.0005)


async def measure(results: int, presses: int, directory: Path) -> None:
    from textual.widgets import DataTable

    from tui_batch.core.backend import CallableBackend
    from tui_batch.core.processor import BatchProcessor
    from tui_batch.ui.app import TuiBatchApp
    from tui_batch.ui.screens.compare import CompareScreen
    from tui_batch.ui.screens.stats import StatsScreen
    from tui_batch.ui.widgets.virtual_table import VirtualTable

    painted: dict[tuple[str, int], float] = {}
    table_line, virtual_line = DataTable.render_line, VirtualTable.render_line

    def data_table_line(self, y):
        strip = table_line(self, y)
        row = self.scroll_offset.y + y - 1
        if y and self.row_count and row == self.cursor_row:
            painted.setdefault(("groups", row), time.perf_counter())
        return strip

    def virtual_table_line(self, y):
        strip = virtual_line(self, y)
        if y == 1 and self.count:  # the first row, once there are rows
            painted.setdefault((self.id or "", 0), time.perf_counter())
        return strip

    DataTable.render_line = data_table_line
    VirtualTable.render_line = virtual_table_line

    processor = BatchProcessor(directory / "checkpoints")
    running = write_job(processor.checkpoint_dir, results, seed=2, done=0.9)
    job_id = running.stem.removeprefix("batch_")

    def slow(prompt: str) -> str:
        time.sleep(0.001)
        return prompt[::-1]

    app = TuiBatchApp(None, processor=processor, backend_factory=lambda job: CallableBackend(slow))
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(0.3)
        app.start_saved(job_id, retry_failed=False)
        await until(
            lambda: app.run_state is not None and app.run_state.job.job_id == job_id,
            "the job to resume",
        )
        await pilot.pause(0.5)
        sent = time.perf_counter()
        app.show_stats(job_id)
        await until(
            lambda: (
                isinstance(app.screen, StatsScreen)
                and app.screen.stats is not None
                and ("groups", 0) in painted
            ),
            "the stats screen's figures",
        )
        open_stats = time.perf_counter() - sent
        table = app.screen.query_one("#failure-groups", DataTable)
        latencies, during = [], []
        for n in range(presses):
            target = 1 if n % 2 == 0 else 0
            painted.pop(("groups", target), None)
            sent = time.perf_counter()
            send_key(app, "down" if target else "up")
            await until(
                lambda target=target: ("groups", target) in painted,
                f"a repaint (press {n}, cursor {table.cursor_row}, rows {table.row_count}, "
                f"painted {sorted(k for k in painted if k[0] == 'groups')})",
                limit=10,
            )
            latencies.append(time.perf_counter() - sent)
            during.append(app.batch_active)
            await asyncio.sleep(0.1)
        groups = table.row_count
        app.run_state.cancel.set()
        await app.workers.wait_for_complete()

    pair = [write_job(directory / "compare", results, seed=n) for n in (3, 4)]
    compare_app = TuiBatchApp(None, processor=BatchProcessor(directory / "compare"))
    async with compare_app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(0.3)
        painted.clear()
        sent = time.perf_counter()
        compare_app.push_screen(CompareScreen([p.stem.removeprefix("batch_") for p in pair]))
        await until(lambda: ("compare-rows", 0) in painted, "the compare screen's first page")
        open_compare = time.perf_counter() - sent
        count = compare_app.screen.count

    ms = sorted(1000 * x for x, busy in zip(latencies, during, strict=True) if busy)
    print(f"{results:,} results a job")
    print(
        f"stats screen, opened while the job runs: {1000 * open_stats:.0f} ms to its figures "
        f"({groups} failure groups)"
    )
    print(
        f"key-press to repaint over the {len(ms)} of {presses} presses made while the job ran: "
        f"median {statistics.median(ms):.1f} ms, worst {ms[-1]:.1f} ms (must be under 100 ms)"
    )
    print(
        f"compare screen, two jobs: {1000 * open_compare:.0f} ms to the first rendered page "
        f"({count:,} rows)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--presses", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        os.environ["TUI_BATCH_DATA_DIR"] = data
        asyncio.run(measure(args.results, args.presses, Path(data)))


if __name__ == "__main__":
    main()
