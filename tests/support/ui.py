"""Helpers for the dashboard's tests: a terminal size, hostile text, a prompts file, and
typing and waiting through Textual's pilot."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from textual.widgets import DirectoryTree
from textual.worker import WorkerCancelled, WorkerFailed

from tui_batch.core.backend import CallableBackend

SIZE = (120, 36)
HOSTILE = "[bold red]x[/] \x1b[31mred\x1b[0m [link=http://evil.example]y[/link] \x07\u202e"


def prompts_file(tmp_path: Path, count: int = 6, long_one: bool = True) -> Path:
    lines = [
        f"Write a long story about {topic}."
        for topic in [
            "a stack",
            "a queue",
            "a hash table",
            "recursion",
            "TCP",
            "an index",
            "a mutex",
            "a heap",
        ][:count]
    ]
    if long_one:
        lines.insert(2, "Summarise: " + "lorem ipsum dolor sit amet " * 200)
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


async def type_into(pilot, selector: str, text: str) -> None:
    widget = pilot.app.screen.query_one(selector)
    widget.focus()
    await pilot.pause()
    await pilot.press("ctrl+a", "backspace", *text)  # ctrl+a: home; then clear and type
    widget.value = text


async def wait_until(pilot, condition, timeout: float = 120.0) -> None:
    """Wait for `condition` (what the test needs to see), never for a fixed time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.02)


def slow_backend(delay: float = 0.05):

    def answer(prompt: str) -> str:
        time.sleep(delay)
        return prompt.upper()

    return lambda job: CallableBackend(answer)


async def settle(pilot) -> None:
    """Wait until the app has done what a key or a call set going: its workers finished
    (but a running job's, which a test waits for by what it does), the messages they
    posted handled, the screen repainted. Never a fixed time."""
    for _ in range(2):  # a message handled may start another worker
        # Not a running job's, nor a file tree's loader (it lives as long as the tree).
        for worker in [
            w
            for w in pilot.app.workers
            if w.group != "batch" and not isinstance(w.node, DirectoryTree)
        ]:
            # One cancelled (overtaken by a newer one) or failed is done too.
            with contextlib.suppress(WorkerCancelled, WorkerFailed):
                await worker.wait()
        await pilot.pause()  # (not the animations: a running job's never end)


async def ready(pilot) -> None:
    """The app has shown its first screen (job setup) and settled."""
    from tui_batch.ui.screens.setup import SetupScreen

    await wait_until(pilot, lambda: any(isinstance(s, SetupScreen) for s in pilot.app.screen_stack))
    await settle(pilot)


def palette_hits(app) -> int:
    """How many commands the open command palette lists (it searches in tasks of its
    own, not workers: a test waits for its hits with `wait_until`)."""
    from textual.command import CommandList

    found = app.screen.query(CommandList)
    return found.first().option_count if found else 0


async def previewed(pilot) -> int:
    """Job setup's prompts file, read to its end by the preview: how many prompts it has."""
    from tui_batch.ui.widgets.prompts_form import PromptsForm

    form = pilot.app.screen.query_one(PromptsForm)
    await wait_until(pilot, lambda: form.file_preview is not None and form.file_preview.done)
    return form.file_preview.count
