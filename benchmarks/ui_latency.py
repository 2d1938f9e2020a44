"""Key-press to repaint latency of the dashboard while a 100,000-prompt job runs.

An instant backend (no model) pushes results as fast as the engine can checkpoint them,
the worst case for the UI. The app runs headless (Textual's pilot); each of 50 presses
of `j` (cursor down in the progress table) is timed from the key being sent until the
table has rendered the row the cursor moved to. Then the finished job's results viewer
is opened (`r`) and timed until its first page has rendered, with the memory it holds.

With `--others N`, N more jobs of `--other-prompts` prompts each (5 ms a prompt) run at
once beside it, started first, as in a dashboard with several jobs going; the presses
are on the big job's progress screen and counted while every job runs.

    python benchmarks/ui_latency.py [--prompts 100000] [--presses 50] [--others 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def send_key(app, key: str) -> None:
    """Deliver a key the way the terminal driver does when one arrives on stdin.

    (Pilot.press would also wait for the whole screen to go idle, which a screen kept
    busy by a running job never quite does.)"""
    from textual import events

    event = events.Key(key, key)
    event.set_sender(app)
    app._driver.send_message(event)


def answer_slowly(prompt: str) -> str:
    time.sleep(0.005)
    return prompt[::-1]


async def measure(prompts: int, presses: int, others: int = 0, other_prompts: int = 20_000) -> None:
    from tui_batch.core.backend import CallableBackend
    from tui_batch.core.processor import BatchProcessor
    from tui_batch.ui.app import TuiBatchApp
    from tui_batch.ui.screens.results import ResultsScreen
    from tui_batch.ui.widgets.virtual_table import VirtualTable

    rendered: dict[int, float] = {}
    original = VirtualTable.render_line

    def render_line(self, y):
        strip = original(self, y)
        if y and self.scroll_offset.y + y - 1 == self.cursor:
            rendered.setdefault(self.cursor, time.perf_counter())
        return strip

    VirtualTable.render_line = render_line
    processor = BatchProcessor()
    texts = [f"Prompt {i}: say something about item {i}." for i in range(prompts)]
    job = processor.create_job("instant", texts, checkpoint_every=5)
    beside = [
        processor.create_job("slow", [f"Other {n}: item {i}." for i in range(other_prompts)])
        for n in range(others)
    ]

    def backend(job):
        return CallableBackend(answer_slowly if job.model_id == "slow" else lambda p: p[::-1])

    app = TuiBatchApp(None, processor=processor, backend_factory=backend)
    latencies: list[float] = []
    running_during: list[bool] = []
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(0.3)
        for other in beside:
            app.start_job(other)
        start = time.perf_counter()
        app.start_job(job)
        await pilot.pause(0.3)
        table = app.screen.query_one("#prompts", VirtualTable)
        for _ in range(presses):
            target = min(table.cursor + 1, table.count - 1)
            rendered.pop(target, None)
            sent = time.perf_counter()
            send_key(app, "j")
            while target not in rendered:
                await asyncio.sleep(0.0005)
            latencies.append(rendered[target] - sent)
            running_during.append(len(app.queue.runs()) == 1 + others)
            await asyncio.sleep(0.05)
        while not app.run_state.finished:
            await asyncio.sleep(0.05)
        job_seconds = time.perf_counter() - start
        await pilot.pause(0.3)
        before = rss_mib()
        rendered.clear()
        sent = time.perf_counter()
        await pilot.press("r")
        while not isinstance(app.screen, ResultsScreen) or 0 not in rendered:
            await asyncio.sleep(0.0005)
        open_seconds = time.perf_counter() - sent
        held = rss_mib() - before
        results_count = app.screen.query_one("#results", VirtualTable).count
        app.queue.stop_all()
        while app.batch_active:
            await asyncio.sleep(0.05)

    ms = sorted(1000 * x for x, running in zip(latencies, running_during, strict=True) if running)
    beside_text = f", {others} jobs of {other_prompts:,} running beside it" if others else ""
    print(
        f"{prompts:,}-prompt job on an instant backend{beside_text}; the job ran "
        f"{job_seconds:.1f}s ({prompts / job_seconds:,.0f} results/s)"
    )
    print(
        f"key-press to repaint over the {len(ms)} of {presses} presses made while every job ran: "
        f"median {statistics.median(ms):.1f} ms, worst {ms[-1]:.1f} ms (must be under 100 ms)"
    )
    print(
        f"open the results of {results_count:,} results: {1000 * open_seconds:.0f} ms "
        f"to the first rendered page; memory held by the viewer: {held:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--presses", type=int, default=50)
    parser.add_argument("--others", type=int, default=0)
    parser.add_argument("--other-prompts", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        os.environ["TUI_BATCH_DATA_DIR"] = str(Path(data))
        asyncio.run(measure(args.prompts, args.presses, args.others, args.other_prompts))


if __name__ == "__main__":
    main()
