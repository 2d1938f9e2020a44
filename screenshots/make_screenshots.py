"""Screenshots of every screen, from a real run of the demo model, in-process and on
two real llama-cpp-python servers.

Writes `screenshots/<screen>.svg` and, when `rsvg-convert` (Debian: librsvg2-bin) is
installed, a PNG of each. The data dir is a temporary one, so nothing of yours shows.

    python screenshots/make_screenshots.py
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE = (120, 36)


def write_prompts(folder: Path) -> Path:
    """The example prompts, plus one too long for the context, so a failure shows."""
    examples = (HERE.parent / "examples" / "batch_prompts.txt").read_text(encoding="utf-8")
    lines = [line for line in examples.splitlines() if line.strip() and not line.startswith("#")]
    long_prompt = "Summarise this: " + "lorem ipsum dolor sit amet " * 300
    path = folder / "prompts.txt"
    path.write_text("\n".join(lines[:11] + [long_prompt] + lines[11:16]) + "\n", encoding="utf-8")
    return path


def save(app, name: str) -> None:
    svg = HERE / f"{name}.svg"
    app.save_screenshot(str(svg))
    converter = shutil.which("rsvg-convert")
    if converter is None:
        return
    # librsvg collapses runs of &#160;: give it plain spaces it is told to keep.
    text = svg.read_text(encoding="utf-8").replace("&#160;", " ")
    text = re.sub(r"<text ", '<text xml:space="preserve" ', text)
    with tempfile.NamedTemporaryFile("w", suffix=".svg", delete=False, encoding="utf-8") as tmp:
        tmp.write(text)
    subprocess.run([converter, tmp.name, "-o", str(HERE / f"{name}.png")], check=True)
    os.unlink(tmp.name)
    print(f"wrote {svg.name} and {name}.png")


async def main() -> None:
    from tui_batch.ui.app import TuiBatchApp
    from tui_batch.ui.screens.progress import ProgressScreen

    prompts = write_prompts(Path(os.environ["TUI_BATCH_DATA_DIR"]))
    app = TuiBatchApp(prompts)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(1.5)
        app.screen.query_one("#max_tokens").value = "32"  # keeps the run short
        await pilot.pause(0.5)
        save(app, "setup")
        await pilot.press("ctrl+r")
        while app.run_state is None or app.run_state.job.done < 6:
            await pilot.pause(0.2)
        save(app, "progress")
        await app.workers.wait_for_complete()
        await pilot.pause(0.5)
        assert isinstance(app.screen, ProgressScreen)
        await pilot.press("r")
        await pilot.pause(0.5)
        await pilot.press("down", "down")
        await pilot.pause(0.3)
        save(app, "results")
        await pilot.press("f")
        await pilot.pause(0.3)
        save(app, "results_failed")
        await pilot.press("ctrl+b")
        await pilot.pause(0.5)
        save(app, "checkpoints")
        await pilot.press("t")
        await pilot.pause(0.5)
        await app.workers.wait_for_complete()
        await pilot.pause(0.5)
        save(app, "stats")
        await pilot.press("escape")
        await pilot.press("question_mark")
        await pilot.pause(0.3)
        save(app, "help")


async def template() -> None:
    """Job setup's template tab, filled from the example job file."""
    from tui_batch.ui.app import TuiBatchApp

    os.chdir(HERE.parent)  # the form shows paths under the working folder as relative
    app = TuiBatchApp(Path("examples") / "job.toml")
    async with app.run_test(size=SIZE) as pilot:
        preview = app.screen.query_one("#template-preview")
        while "all render" not in str(preview.visual):
            await pilot.pause(0.2)
        app.clear_notifications()
        await pilot.pause(0.5)
        save(app, "setup_template")


async def servers() -> None:
    """A job on two real llama-cpp-python servers; one is killed mid-run."""
    from tui_batch.models.catalog import demo_model_path
    from tui_batch.ui.app import TuiBatchApp

    from support.fake_server import start_llama_servers

    prompts = HERE.parent / "examples" / "batch_prompts.txt"
    started = start_llama_servers(str(demo_model_path()), 2)
    try:
        app = TuiBatchApp(prompts)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(1.0)
            setup = app.screen
            setup.query_one("#run-on").value = "server"
            setup.query_one("#servers").value = " ".join(f"{url}#2" for url, _ in started)
            setup.query_one("#max_tokens").value = "32"
            await pilot.press("f5")
            while setup.query_one("#server-model").value != "smollm2":
                await pilot.pause(0.2)
            save(app, "setup_servers")
            await pilot.press("ctrl+r")
            while app.run_state is None or app.run_state.job.done < 6:
                await pilot.pause(0.2)
            started[1][1].kill()  # the second server dies: its prompts go to the first
            status = app.run_state.backend_status
            while not any(e.state == "out" for e in status().endpoints):
                await pilot.pause(0.2)
            await pilot.pause(1.0)
            save(app, "progress_servers")
            app.run_state.cancel.set()
            await app.workers.wait_for_complete()
    finally:
        for _, process in started:
            process.kill()


async def jobs() -> None:
    """The example labelling job file with a matrix of temperatures, started from job
    setup: its three jobs at once on the one loaded demo model, in the Jobs view (one
    paused), then the group's leaderboard."""
    from tui_batch.ui.app import TuiBatchApp
    from tui_batch.ui.screens.group import GroupScreen

    examples = HERE.parent / "examples"
    text = (examples / "review_labels.toml").read_text(encoding="utf-8")
    for name in ("review_label.jinja", "reviews.csv"):  # its paths, from another folder
        text = text.replace(f'"{name}"', f'"{examples / name}"')
    text = text.replace("[input]\n", "[input]\nlimit = 24\n")
    path = Path(os.environ["TUI_BATCH_DATA_DIR"]) / "labels_matrix.toml"
    path.write_text(text + "\n[matrix]\ntemperature = [0.0, 0.7, 1.2]\n", encoding="utf-8")
    app = TuiBatchApp(path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(1.5)
        await pilot.press("ctrl+r")
        while len(app.queue.runs()) < 3 or min(r.job.done for r in app.queue.runs()) < 2:
            await pilot.pause(0.2)
        app.queue.jobs[1].run.pause.set()
        await pilot.press("ctrl+j")
        await pilot.pause(1.5)
        app.clear_notifications()
        await pilot.pause(0.5)
        save(app, "jobs")
        app.queue.jobs[1].run.pause.clear()
        while app.batch_active:
            await pilot.pause(0.2)
        app.push_screen(GroupScreen(app.queue.jobs[0].run.job.group_id))
        while getattr(app.screen, "board", None) is None:
            await pilot.pause(0.2)
        app.clear_notifications()
        await pilot.pause(0.5)
        save(app, "group")


async def compare() -> None:
    """The in-process job and the one on servers, marked in the browser and compared."""
    from tui_batch.ui.app import TuiBatchApp

    app = TuiBatchApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)
        await pilot.press("ctrl+b")
        await pilot.pause(0.5)
        await pilot.press("space", "down", "space", "c")
        while getattr(app.screen, "summary", None) is None:
            await pilot.pause(0.2)
        await pilot.press("o")
        await pilot.pause(0.5)
        save(app, "compare")


async def labels_results(name: str, data: Path, cache: str, down: int) -> None:
    """The example labelling job over `data` run from job setup (with the answer cache
    `cache`), then its results, `down` rows down, saved as `name`."""
    from tui_batch.ui.app import TuiBatchApp
    from tui_batch.ui.screens.progress import ProgressScreen

    app = TuiBatchApp(Path("examples") / "review_labels.toml")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(1.0)
        app.screen.query_one("#data-path").value = str(data)
        app.screen.query_one("#cache").value = cache
        preview = app.screen.query_one("#template-preview")
        while "12 records, all render" not in str(preview.visual):
            await pilot.pause(0.2)
        await pilot.press("ctrl+r")
        while not isinstance(app.screen, ProgressScreen):
            await pilot.pause(0.2)
        await app.workers.wait_for_complete()
        await pilot.pause(0.5)
        await pilot.press("r")
        await pilot.pause(0.5)
        await pilot.press(*["down"] * down)
        await pilot.pause(0.3)
        app.clear_notifications()
        await pilot.pause(0.3)
        save(app, name)


async def structured() -> None:
    """The example labelling job (its schema enforced) on 12 reviews: the results, with an
    answer's fields in the detail pane."""
    os.chdir(HERE.parent)
    rows = (HERE.parent / "examples" / "reviews.csv").read_text(encoding="utf-8").splitlines()
    data = Path(os.environ["TUI_BATCH_DATA_DIR"]) / "reviews12.csv"
    data.write_text("\n".join(rows[:13]) + "\n", encoding="utf-8")
    await labels_results("results_structured", data, "off", 2)


async def scores() -> None:
    """The labelling job above is scored against its hand-written sentiments: its stats
    with the confusion matrix; then a second run that may not say positive, compared
    with it, regressions first."""
    from tui_batch.core.processor import BatchProcessor
    from tui_batch.ui.app import TuiBatchApp
    from tui_batch.ui.screens.compare import CompareScreen

    [first] = [s.job_id for s in BatchProcessor().job_summaries() if s.scoring is not None]
    data = Path(os.environ["TUI_BATCH_DATA_DIR"]) / "reviews12.csv"
    narrower = "sentiment: negative|neutral, stars: int 1..5, headline: str ..60"
    subprocess.run(
        [sys.executable, "-m", "tui_batch", "run", "examples/review_labels.toml",
         "--data", str(data), "--schema", narrower, "--out", str(data.with_suffix(".out.csv"))],
        check=True, capture_output=True,
    )  # fmt: skip
    [second] = [
        s.job_id for s in BatchProcessor().job_summaries() if s.scoring and s.job_id != first
    ]
    app = TuiBatchApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)
        app.show_stats(first)
        while getattr(app.screen, "stats", None) is None:
            await pilot.pause(0.2)
        await pilot.pause(0.5)
        save(app, "stats_scores")
        await pilot.press("escape")
        app.push_screen(CompareScreen([first, second]))
        while getattr(app.screen, "summary", None) is None:
            await pilot.pause(0.2)
        await pilot.press("r")
        await pilot.pause(0.5)
        save(app, "compare_regressions")


async def cached() -> None:
    """The labelling job on the 12 reviews run twice with the answer cache: the second
    run's results, every answer served from the cache."""
    data = Path(os.environ["TUI_BATCH_DATA_DIR"]) / "reviews12.csv"
    subprocess.run(
        [sys.executable, "-m", "tui_batch", "run", "examples/review_labels.toml",
         "--data", str(data), "--cache", "write", "--out", str(data.with_suffix(".c.csv"))],
        check=True, capture_output=True,
    )  # fmt: skip
    await labels_results("results_cached", data, "read-write", 1)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as data:
        os.environ["TUI_BATCH_DATA_DIR"] = data
        sys.path.insert(0, str(HERE.parent))
        sys.path.insert(0, str(HERE.parent / "tests"))
        asyncio.run(main())
        asyncio.run(template())
        asyncio.run(servers())
        asyncio.run(compare())
        asyncio.run(structured())
        asyncio.run(scores())
        asyncio.run(cached())
        asyncio.run(jobs())  # last: its scored jobs would be counted by scores()'s
